// Whether these tests can run on a WebGPU adapter here. CI installs a software one (lavapipe
// from Debian's bookworm-backports, see .ci/run); without it the tests skip, saying why.
import { selectBackend } from '../../src/train/backend.ts';
import { webGpuAdapter, type AdapterDescription } from '../../src/train/backends/webgpu.ts';

export interface WebGpuProbe {
  /** false when an adapter is usable, else the reason to skip. */
  skip: string | false;
  adapter: AdapterDescription | null;
}

/** Selects the webgpu backend by name (so a software adapter is accepted), then leaves it active. */
export async function probeWebGpu(): Promise<WebGpuProbe> {
  try {
    await selectBackend('webgpu');
    return { skip: false, adapter: webGpuAdapter() };
  } catch (e) {
    return {
      skip: `no usable WebGPU adapter here (${(e as Error).message}); install a Vulkan driver, e.g. lavapipe: apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`,
      adapter: null,
    };
  }
}
