// The WebAssembly SIMD version of Resampler (../resample.ts): same inputs, same output bits,
// ~4x faster per image. The kernel is resample.c, compiled to the committed resample.wasm by
// build.sh; this wrapper loads it synchronously (workers construct resamplers at start-up), owns
// one instance + linear memory per resampler, copies the crop's source rows in, and copies the
// finished image out with one typed-array set into the target.
import { readFileSync } from 'node:fs';
import type { CropBox } from '../crop-box.ts';
import type { Normalisation } from '../normalisation.ts';
import { checkTarget, type ImageResampler, type ResampleTarget } from '../resample.ts';

// The WebAssembly namespace is declared by lib.dom, which this project does not load (lib ES2023,
// types node); the few members used here, typed locally.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmModule {
  readonly __brand?: 'WebAssembly.Module';
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => { exports: unknown };
}
const WebAssembly = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface Exports {
  memory: WasmMemory;
  __heap_base: { value: number };
  /** norm: a pointer to scale[C], bias[C] for float32 output; 0 for uint8 output. */
  resample(
    res: number,
    C: number,
    src: number,
    W: number,
    H: number,
    r0: number,
    r1: number,
    bx: number,
    by: number,
    bw: number,
    bh: number,
    flip: number,
    norm: number,
    out: number,
    scratch: number,
    scratchCap: number,
    cache: number,
    cacheCap: number,
  ): number;
}

const WASM_URL = new URL('./resample.wasm', import.meta.url);
const PAGE = 65536;
/**
 * The uint8 kernel's table cache (resample.c): room for every two-tap crop table of 64x64 images
 * at res 64 (~1,200 vertical and ~2,500 horizontal keys) with two-way sets to spare. Per
 * resampler, so per loader worker.
 */
export const TABLE_CACHE_BYTES = 8 << 20;

export interface WasmResamplerOptions {
  /** Bytes of the uint8 kernel's table cache (default TABLE_CACHE_BYTES; 0: none). */
  tableCacheBytes?: number;
  /** Another build of resample.c to run instead of the committed one (bench augment --compare). */
  wasmFile?: string;
}
/** Channels the kernel is compiled for. */
export const WASM_MAX_CHANNELS = 4;

let compiled: WasmModule | null | undefined;

/** The compiled module, or null where this runtime cannot compile it (no SIMD). Cached. */
export function wasmResampleModule(): WasmModule | null {
  if (compiled === undefined) {
    try {
      // Throws where WebAssembly or its SIMD proposal is missing (or the file is).
      compiled = new WebAssembly.Module(readFileSync(WASM_URL));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

const align16 = (n: number): number => (n + 15) & ~15;

export class WasmResampler implements ImageResampler {
  private readonly ex: Exports;
  private readonly outPtr: number;
  private readonly normPtr: number;
  private readonly cachePtr: number;
  private readonly cacheBytes: number;
  private readonly scratchPtr: number;
  private scratchCap: number;
  private srcPtr = 0;
  private srcCap: number;
  private u8!: Uint8Array;
  private f32!: Float32Array;
  private outFloats!: Float32Array;
  private outBytes!: Uint8ClampedArray;

  constructor(
    readonly res: number,
    readonly channels: number,
    options: WasmResamplerOptions = {},
  ) {
    if (!Number.isInteger(res) || res < 1) throw new RangeError(`res must be a positive integer, got ${res}`);
    if (!Number.isInteger(channels) || channels < 1 || channels > WASM_MAX_CHANNELS) {
      throw new RangeError(`WasmResampler supports 1..${WASM_MAX_CHANNELS} channels, got ${channels}`);
    }
    const mod = options.wasmFile ? new WebAssembly.Module(readFileSync(options.wasmFile)) : wasmResampleModule();
    if (!mod) throw new Error('WebAssembly SIMD is not available in this runtime');
    this.ex = new WebAssembly.Instance(mod, {}).exports as unknown as Exports;
    const rowB = align16(res * 4);
    this.outPtr = align16(this.ex.__heap_base.value);
    this.normPtr = this.outPtr + align16(channels * res * res * 4 + 64);
    this.cachePtr = this.normPtr + 64;
    const cacheBytes = options.tableCacheBytes ?? TABLE_CACHE_BYTES;
    if (!Number.isInteger(cacheBytes) || cacheBytes < 0 || cacheBytes > 2 ** 30) {
      throw new RangeError(`tableCacheBytes must be an integer in [0, 2^30], got ${cacheBytes}`);
    }
    this.cacheBytes = align16(cacheBytes);
    this.scratchPtr = this.cachePtr + this.cacheBytes;
    // Room for tables and an enlarged crop's horizontal pass; grown on demand for big shrinks.
    this.scratchCap = align16(channels * (res + 2) * rowB + 64 * res + 4 * 16 * (res + 8) + 4096);
    this.srcCap = align16(channels * res * res * 2 + 4096);
    this.layout();
  }

  /** Place src after scratch and make sure the memory holds both; refresh views if it grew. */
  private layout(): void {
    this.srcPtr = this.scratchPtr + this.scratchCap;
    const need = this.srcPtr + this.srcCap;
    const mem = this.ex.memory;
    if (mem.buffer.byteLength < need) mem.grow(Math.ceil((need - mem.buffer.byteLength) / PAGE));
    this.u8 = new Uint8Array(mem.buffer);
    this.f32 = new Float32Array(mem.buffer);
    const n = this.channels * this.res * this.res;
    this.outFloats = this.f32.subarray(this.outPtr >> 2, (this.outPtr >> 2) + n);
    this.outBytes = new Uint8ClampedArray(mem.buffer, this.outPtr, n);
  }

  /** Same contract as Resampler.run, same bits. */
  run(src: Uint8Array, width: number, height: number, box: CropBox, out: ResampleTarget, offset: number, norm?: Normalisation): void {
    checkTarget(out, norm);
    const floats = out instanceof Float32Array;
    if (floats) {
      const f32 = this.f32;
      const np = this.normPtr >> 2;
      for (let c = 0; c < this.channels; c++) {
        f32[np + c] = norm ? norm.scale[c]! : 1;
        f32[np + this.channels + c] = norm ? norm.bias[c]! : 0;
      }
    }
    this.exec(src, width, height, box, floats ? this.normPtr : 0);
    // Read the views after exec: a retry may have grown the memory.
    if (floats) out.set(this.outFloats, offset);
    else out.set(this.outBytes, offset);
  }

  /** Runs the kernel into the output area (retrying with more scratch or all rows if asked). */
  private exec(src: Uint8Array, width: number, height: number, box: CropBox, normPtr: number): void {
    const C = this.channels;
    const rowBytes = width * C;
    // Rows any tap can read: bilinear reaches one row either side of the box, area stays inside.
    let r0 = Math.max(0, Math.min(Math.floor(box.y) - 1, height - 2));
    let r1 = Math.min(height, Math.max(Math.ceil(box.y + box.height) + 1, 2));
    if (!(r1 > r0)) {
      r0 = 0;
      r1 = height;
    }
    for (let attempt = 0; attempt < 4; attempt++) {
      this.copyRows(src, rowBytes, r0, r1, box.width);
      const rc = this.ex.resample(
        this.res,
        C,
        this.srcPtr,
        width,
        height,
        r0,
        r1,
        box.x,
        box.y,
        box.width,
        box.height,
        box.flip ? 1 : 0,
        normPtr,
        this.outPtr,
        this.scratchPtr,
        this.scratchCap,
        this.cachePtr,
        this.cacheBytes,
      );
      if (rc === 0) return;
      if (rc > 0) {
        this.scratchCap = align16(rc + 4096);
        this.layout();
        // Norm lives below scratch, unaffected; views were refreshed.
        continue;
      }
      if (rc === -1 && (r0 !== 0 || r1 !== height)) {
        r0 = 0;
        r1 = height;
        continue;
      }
      throw new RangeError(`crop box ${JSON.stringify(box)} reads outside the ${width}x${height} image`);
    }
    throw new Error('WasmResampler: scratch sizing did not converge');
  }

  private copyRows(src: Uint8Array, rowBytes: number, r0: number, r1: number, boxWidth: number): void {
    const n = (r1 - r0) * rowBytes;
    // Taps with zero weight may read up to `stride` pixels plus one 16-byte window past a row.
    const stride = Math.max(2, Math.ceil(boxWidth / this.res) + 1);
    const need = align16(n + (stride + 2) * this.channels + 64);
    if (need > this.srcCap) {
      this.srcCap = align16(need * 1.25);
      this.layout();
    }
    this.u8.set(src.subarray(r0 * rowBytes, r1 * rowBytes), this.srcPtr);
  }
}
