// Cross-check against an independent implementation: PIL (the library behind the paper's
// torchvision pipeline) where it computes the same thing, and a numpy exact-area reference where
// PIL's BOX filter deliberately differs (PIL weighs whole pixels by whether their centre falls
// in the box; we weigh fractional coverage, like OpenCV INTER_AREA).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { resize, type CropRect } from '../../../src/pipeline/image/resize.ts';
import type { RawImage } from '../../../src/pipeline/image/types.ts';
import { maxAbsDiff, photoLike, randomImage } from './fixtures/images.ts';

function findPython(): string | null {
  for (const exe of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(exe, ['-c', 'import PIL, numpy'], { encoding: 'utf8' });
    if (r.status === 0) return exe;
  }
  return null;
}

const python = findPython();

const SCRIPT = String.raw`
import json, sys
import numpy as np
from PIL import Image
cfg = json.load(open(sys.argv[1]))
src = open(sys.argv[2], 'rb').read()
mode = 'RGB' if cfg['channels'] == 3 else 'L'
img = Image.frombytes(mode, (cfg['width'], cfg['height']), src)
op = cfg['op']
if op == 'reduce':
    out = img.reduce(cfg['factor'])
elif op in ('box', 'bilinear'):
    R = getattr(Image, 'Resampling', Image)  # Pillow < 9.1 has the constants on Image
    f = R.BOX if op == 'box' else R.BILINEAR
    out = img.resize((cfg['outWidth'], cfg['outHeight']), f, box=tuple(cfg['box']) if cfg.get('box') else None)
elif op == 'area':
    # Exact area: out = Wy @ img @ Wx^T, with W[i, j] = coverage of source pixel j by output i.
    def weights(n_in, n_out, c0, length):
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            a = c0 + i * length / n_out
            b = c0 + (i + 1) * length / n_out
            for j in range(int(np.floor(a)), min(n_in, int(np.ceil(b)))):
                w[i, j] = max(0.0, min(b, j + 1) - max(a, j))
            w[i] /= w[i].sum()
        return w
    a = np.asarray(img, dtype=np.float64).reshape(cfg['height'], cfg['width'], -1)
    box = cfg.get('box') or [0, 0, cfg['width'], cfg['height']]
    wx = weights(cfg['width'], cfg['outWidth'], box[0], box[2] - box[0])
    wy = weights(cfg['height'], cfg['outHeight'], box[1], box[3] - box[1])
    r = np.einsum('ikc,lk->ilc', np.einsum('ij,jkc->ikc', wy, a), wx)
    out = np.clip(np.floor(r + 0.5), 0, 255).astype(np.uint8)
    sys.stdout.buffer.write(out.tobytes())
    sys.exit(0)
sys.stdout.buffer.write(out.tobytes())
`;

interface RefCase {
  op: 'reduce' | 'box' | 'bilinear' | 'area';
  factor?: number;
  outWidth?: number;
  outHeight?: number;
  box?: [number, number, number, number];
}

function reference(exe: string, src: RawImage, c: RefCase): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'resize-pil-'));
  try {
    writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ ...c, width: src.width, height: src.height, channels: src.channels }));
    writeFileSync(join(dir, 'src.raw'), src.data);
    writeFileSync(join(dir, 'ref.py'), SCRIPT);
    const r = spawnSync(exe, [join(dir, 'ref.py'), join(dir, 'cfg.json'), join(dir, 'src.raw')], { maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`python failed: ${r.stderr.toString()}`);
    return new Uint8Array(r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function cropOf(box: [number, number, number, number]): CropRect {
  return { x: box[0], y: box[1], width: box[2] - box[0], height: box[3] - box[1] };
}

t.test(
  'agreement with PIL and a numpy area reference',
  { skip: python === null ? 'python3 with PIL and numpy not found (checked python3 and /usr/bin/python3)' : false },
  async (t) => {
    const exe = python as string;
    const rgb = randomImage(256, 192, 3, 21);
    const grey = randomImage(130, 90, 1, 22);

    t.test('integer factors equal PIL Image.reduce within 1', async (t) => {
      for (const f of [2, 4]) {
        const ours = resize(rgb, 256 / f, 192 / f);
        t.ok(maxAbsDiff(ours.data, reference(exe, rgb, { op: 'reduce', factor: f })) <= 1, `RGB reduce(${f})`);
      }
      const g = resize(grey, 65, 45);
      t.ok(maxAbsDiff(g.data, reference(exe, grey, { op: 'reduce', factor: 2 })) <= 1, 'grey reduce(2)');
      const viaBox = reference(exe, rgb, { op: 'box', outWidth: 64, outHeight: 48 });
      t.ok(maxAbsDiff(resize(rgb, 64, 48).data, viaBox) <= 1, 'RGB resize(BOX) at 4x');
    });

    t.test('integer-ratio crop box equals PIL resize(BOX, box=...) within 1', async (t) => {
      const box: [number, number, number, number] = [8, 4, 8 + 120, 4 + 90];
      const ours = resize(rgb, 40, 30, cropOf(box));
      t.ok(maxAbsDiff(ours.data, reference(exe, rgb, { op: 'box', outWidth: 40, outHeight: 30, box })) <= 1);
    });

    t.test('fractional ratios equal the exact-area reference within 1', async (t) => {
      const photo = photoLike(500, 375);
      const noisy = randomImage(500, 375, 3, 23);
      for (const [name, img] of [
        ['photo-like', photo],
        ['noise', noisy],
      ] as const) {
        const ours = resize(img, 64, 48);
        t.ok(maxAbsDiff(ours.data, reference(exe, img, { op: 'area', outWidth: 64, outHeight: 48 })) <= 1, `${name} 500x375 -> 64x48`);
      }
      const box: [number, number, number, number] = [62.5, 10.25, 62.5 + 301.3, 10.25 + 250.7];
      const ours = resize(noisy, 37, 29, cropOf(box));
      t.ok(maxAbsDiff(ours.data, reference(exe, noisy, { op: 'area', outWidth: 37, outHeight: 29, box })) <= 1, 'fractional crop');
      // PIL's BOX differs from exact area only at fractional edges: on a smooth image, slightly.
      const pilBox = reference(exe, photo, { op: 'box', outWidth: 64, outHeight: 48 });
      t.ok(
        maxAbsDiff(resize(photo, 64, 48).data, pilBox) <= 8,
        `max diff ${maxAbsDiff(resize(photo, 64, 48).data, pilBox)}: ` + 'close to PIL BOX on a photo-like image',
      );
    });

    t.test('upscaling equals PIL BILINEAR within 1', async (t) => {
      const small = randomImage(16, 12, 3, 24);
      t.ok(maxAbsDiff(resize(small, 64, 48).data, reference(exe, small, { op: 'bilinear', outWidth: 64, outHeight: 48 })) <= 1, '16x12 -> 64x48');
      t.ok(maxAbsDiff(resize(small, 37, 29).data, reference(exe, small, { op: 'bilinear', outWidth: 37, outHeight: 29 })) <= 1, '16x12 -> 37x29');
      const box: [number, number, number, number] = [2.5, 1.25, 2.5 + 10, 1.25 + 7.5];
      const ours = resize(small, 64, 64, cropOf(box));
      t.ok(maxAbsDiff(ours.data, reference(exe, small, { op: 'bilinear', outWidth: 64, outHeight: 64, box })) <= 1, 'fractional crop box');
    });
  },
);
