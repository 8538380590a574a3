// One epoch of a loader's frames, copied out of the ring: the bytes tests compare.
import { Loader, type LoaderOptions } from '../../src/pipeline/loader/loader.ts';

/** Every frame of `epoch` from a fresh loader (closed afterwards), and the samples it replaced. */
export async function epochFrames(o: LoaderOptions, epoch = 0): Promise<{ frames: Buffer[]; replaced: number }> {
  const loader = await Loader.open(o);
  try {
    const frames: Buffer[] = [];
    for await (const b of loader.epoch(epoch)) {
      frames.push(Buffer.from(b.frame));
      b.release();
    }
    return { frames, replaced: loader.replaced().count };
  } finally {
    await loader.close();
  }
}
