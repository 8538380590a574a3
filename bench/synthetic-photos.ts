// Photo-like JPEG inputs for the shard benchmarks: ~500x375, q90, in 10 class folders (an
// ImageFolder tree), seeded so every run and every benchmark gets the same files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Rng } from '../src/shared/random.ts';

/** Photo-like content (gradients + texture + noise) so JPEG sizes resemble real photos. */
export async function makePhotos(dir: string, n: number): Promise<void> {
  const w = 500;
  const h = 375;
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < n; i++) {
    const rng = new Rng(42, i);
    const fx = 0.01 + rng.next() * 0.05;
    const fy = 0.01 + rng.next() * 0.05;
    let p = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const base = 128 + 90 * Math.sin(x * fx + y * fy);
        const n0 = rng.nextUint32();
        raw[p++] = Math.max(0, Math.min(255, base + ((n0 & 63) - 32)));
        raw[p++] = Math.max(0, Math.min(255, (x * 255) / w + (((n0 >>> 6) & 63) - 32)));
        raw[p++] = Math.max(0, Math.min(255, (y * 255) / h + (((n0 >>> 12) & 63) - 32)));
      }
    }
    const cls = `c${i % 10}`;
    mkdirSync(join(dir, cls), { recursive: true });
    writeFileSync(
      join(dir, cls, `${i}.jpg`),
      await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer(),
    );
  }
}
