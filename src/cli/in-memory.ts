// --in-memory, shared by the commands that read shards through the loader: its help line, and
// the loader option with a progress line every quarter (a large dataset takes a while to load).
import type { LoaderOptions } from '../pipeline/loader/loader.ts';

export const IN_MEMORY_HELP =
  "hold every shard in shared memory, loaded at the start: workers view samples instead of reading them (a raw 64x64 sample's read is ~20% of its cost); needs the shards' size in free RAM";

export function inMemoryOption(on: boolean, log: (line: string) => void): LoaderOptions['inMemory'] {
  if (!on) return false;
  let shown = 0;
  return {
    onProgress: (loaded, total) => {
      const quarter = total > 0 ? Math.floor((4 * loaded) / total) : 4;
      if (quarter <= shown) return;
      shown = quarter;
      log(`shards into memory: ${25 * quarter}% of ${(total / 2 ** 20).toFixed(1)} MiB`);
    },
  };
}
