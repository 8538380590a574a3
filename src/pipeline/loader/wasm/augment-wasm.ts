// WebAssembly SIMD version of Augmenter (../augment.ts): same inputs, same outputs (within a few
// float32 ulps), ~4x faster per image. The kernel is augment.c, compiled to the committed
// augment.wasm by build.sh; this wrapper loads it synchronously (workers construct augmenters at
// start-up), owns one instance + linear memory per augmenter, copies the crop's source rows in,
// and copies the finished C,H,W floats out with one typed-array set.
import { readFileSync } from 'node:fs';
import { Augmenter, type Normalisation } from '../augment.ts';
import type { CropBox } from '../augment-params.ts';

/** What the loader needs from either implementation. */
export interface ImageAugmenter {
  readonly res: number;
  readonly channels: number;
  run(src: Uint8Array, width: number, height: number, box: CropBox, norm: Normalisation, out: Float32Array, offset: number): void;
  /** The same crop as uint8 C,H,W pixels (rounded, ties to even), not normalised. */
  runUint8(src: Uint8Array, width: number, height: number, box: CropBox, out: Uint8Array, offset: number): void;
}

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
  run(
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
  ): number;
  run_u8(
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
    out: number,
    scratch: number,
    scratchCap: number,
  ): number;
}

const WASM_URL = new URL('./augment.wasm', import.meta.url);
const PAGE = 65536;
/** Channels the kernel is compiled for. */
export const WASM_MAX_CHANNELS = 4;

let compiled: WasmModule | null | undefined;

/** The compiled module, or null where this runtime cannot compile it (no SIMD). Cached. */
export function wasmAugmentModule(): WasmModule | null {
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

export class WasmAugmenter implements ImageAugmenter {
  private readonly ex: Exports;
  private readonly outPtr: number;
  private readonly normPtr: number;
  private readonly scratchPtr: number;
  private scratchCap: number;
  private srcPtr = 0;
  private srcCap: number;
  private u8!: Uint8Array;
  private f32!: Float32Array;
  private outView!: Float32Array;
  private outBytes!: Uint8Array;

  constructor(
    readonly res: number,
    readonly channels: number,
  ) {
    if (!Number.isInteger(res) || res < 1) throw new RangeError(`res must be a positive integer, got ${res}`);
    if (!Number.isInteger(channels) || channels < 1 || channels > WASM_MAX_CHANNELS) {
      throw new RangeError(`WasmAugmenter supports 1..${WASM_MAX_CHANNELS} channels, got ${channels}`);
    }
    const mod = wasmAugmentModule();
    if (!mod) throw new Error('WebAssembly SIMD is not available in this runtime');
    this.ex = new WebAssembly.Instance(mod, {}).exports as unknown as Exports;
    const rowB = align16(res * 4);
    this.outPtr = align16(this.ex.__heap_base.value);
    this.normPtr = this.outPtr + align16(channels * res * res * 4 + 64);
    this.scratchPtr = this.normPtr + 64;
    // Room for tables and an enlarged crop's horizontal pass; grown on demand for big shrinks.
    this.scratchCap = align16(channels * (res + 2) * rowB + 64 * res + 4 * 16 * (res + 8) + 4096);
    this.srcCap = align16(channels * res * res * 2 + 4096);
    this.layout();
  }

  static create(res: number, channels: number): WasmAugmenter {
    return new WasmAugmenter(res, channels);
  }

  /** Place src after scratch and make sure the memory holds both; refresh views if it grew. */
  private layout(): void {
    this.srcPtr = this.scratchPtr + this.scratchCap;
    const need = this.srcPtr + this.srcCap;
    const mem = this.ex.memory;
    if (mem.buffer.byteLength < need) mem.grow(Math.ceil((need - mem.buffer.byteLength) / PAGE));
    this.u8 = new Uint8Array(mem.buffer);
    this.f32 = new Float32Array(mem.buffer);
    this.outView = this.f32.subarray(this.outPtr >> 2, (this.outPtr >> 2) + this.channels * this.res * this.res);
    this.outBytes = this.u8.subarray(this.outPtr, this.outPtr + this.channels * this.res * this.res);
  }

  /**
   * Resample `box` of the HWC uint8 image `src` (width x height x this.channels) into
   * out[offset .. offset + c*res*res) as normalised C,H,W float32. Same contract as Augmenter.run.
   */
  run(src: Uint8Array, width: number, height: number, box: CropBox, norm: Normalisation, out: Float32Array, offset: number): void {
    const f32 = this.f32;
    const np = this.normPtr >> 2;
    for (let c = 0; c < this.channels; c++) {
      f32[np + c] = norm.scale[c]!;
      f32[np + this.channels + c] = norm.bias[c]!;
    }
    this.exec(src, width, height, box, false);
    out.set(this.outView, offset);
  }

  /** As run, into uint8 C,H,W pixels without normalisation (the kernel's run_u8). */
  runUint8(src: Uint8Array, width: number, height: number, box: CropBox, out: Uint8Array, offset: number): void {
    this.exec(src, width, height, box, true);
    out.set(this.outBytes, offset);
  }

  /** Runs the kernel into the output area (retrying with more scratch or all rows if asked). */
  private exec(src: Uint8Array, width: number, height: number, box: CropBox, u8: boolean): void {
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
      const rc = u8
        ? this.ex.run_u8(
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
            this.outPtr,
            this.scratchPtr,
            this.scratchCap,
          )
        : this.ex.run(
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
            this.normPtr,
            this.outPtr,
            this.scratchPtr,
            this.scratchCap,
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
    throw new Error('WasmAugmenter: scratch sizing did not converge');
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

/** The WebAssembly SIMD augmenter where this runtime supports it, else the plain JS one. */
export function createAugmenter(res: number, channels: number): ImageAugmenter {
  if (channels >= 1 && channels <= WASM_MAX_CHANNELS && wasmAugmentModule()) return new WasmAugmenter(res, channels);
  return new Augmenter(res, channels);
}
