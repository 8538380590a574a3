// Which kernel a loader worker runs: WebAssembly SIMD where this runtime has it (every Node >= 20)
// and the kernel is built for the channel count, the TypeScript one otherwise. Same output bits.
import { Resampler, type ImageResampler } from './resample.ts';
import { WASM_MAX_CHANNELS, WasmResampler, wasmResampleModule } from './wasm/resample-wasm.ts';

export function createResampler(res: number, channels: number): ImageResampler {
  if (channels >= 1 && channels <= WASM_MAX_CHANNELS && wasmResampleModule()) return new WasmResampler(res, channels);
  return new Resampler(res, channels);
}
