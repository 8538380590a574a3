// uint8 pixels onto a WebGPU device at one byte a pixel, normalised there.
//
// tfjs has no uint8 dtype, and tfjs-backend-webgpu's uploadToGPU writes int32 and bool alike as
// 4-byte i32, so every tfjs route puts a uint8 batch on the bus at 4 bytes a pixel. Here the
// batch's bytes are handed over as int32 words (a view of the frame's memory: no host work when
// the bytes start 4-aligned and fill whole words; else one copy into a zero-padded buffer), which
// uploadToGPU copies as they are, and one WGSL program splits each word into its 4 pixels and
// writes their normalised float32 values into the model's input [n, c*h*w] (C,H,W: the channel
// of flat index i is (i / (h*w)) % c).
//
// The normalisation is a table lookup, not arithmetic on the device: table[ch * 256 + v] holds
// fround(fround(v * scale[ch]) + bias[ch]) computed on the host exactly as the other backends
// compute it (two float32 roundings). A shader computing v * scale + bias could be contracted to
// a fused multiply-add by the driver's compiler (WGSL permits it, and Vulkan drivers do it unless
// told otherwise), which rounds once and can differ by an ulp; the lookup is bit for bit equal
// to the cpu and wasm paths on every device. The table is 256 * c floats (3 KiB for RGB).
import { endianness } from 'node:os';
import * as tf from '@tensorflow/tfjs';

/** tfjs-backend-webgpu's WebGPUProgram interface (4.22), the fields its shader generator reads. */
interface WebGpuProgramLike {
  variableNames: string[];
  variableComponents: number[];
  outputShape: number[];
  outputComponent: number;
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  uniforms: string;
  getUserCode(): string;
}

type ProgramUniform = { type: 'int32' | 'float32'; data: number[] }[];

/** The parts of tfjs-backend-webgpu's WebGPUBackend used here. */
interface WebGpuBackendLike {
  runWebGPUProgram(program: WebGpuProgramLike, inputs: tf.TensorInfo[], outputDtype: 'float32', uniforms?: ProgramUniform): tf.TensorInfo;
}

const WORKGROUP = 64;

/**
 * One invocation per 32-bit word: 4 pixels in, 4 floats out. When the batch fills whole words
 * the output is written as vec4<f32> (one 16-byte store); otherwise each value is stored alone
 * and the last word's padding bytes are skipped.
 */
class UnpackNormalizeProgram implements WebGpuProgramLike {
  variableNames = ['Words', 'Table'];
  variableComponents = [1, 1];
  outputShape: number[];
  outputComponent: number;
  shaderKey: string;
  dispatchLayout = { x: [0, 1] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  uniforms = 'words : i32, total : i32, plane : i32, channels : i32,';

  constructor(n: number, d: number, words: number) {
    this.outputShape = [n, d];
    this.outputComponent = (n * d) % 4 === 0 ? 4 : 1;
    this.shaderKey = `smlpUnpackNormalize${this.outputComponent}`;
    // runWebGPUProgram spreads an x dispatch over y and z when it exceeds the device's limit.
    this.dispatch = [Math.ceil(words / WORKGROUP), 1, 1];
  }

  getUserCode(): string {
    // One division per word: the channel of the word's first pixel, then stepped across plane
    // boundaries (several within one word when a plane is under 4 pixels).
    const store =
      this.outputComponent === 4
        ? `var v : vec4<f32>;
           for (var k = 0u; k < 4u; k++) { v[k] = pixelValue(word, k); }
           result[index] = v;`
        : `for (var k = 0u; k < 4u; k++) {
             if (base + i32(k) < uniforms.total) { result[base + i32(k)] = pixelValue(word, k); }
           }`;
    return `
      var<private> ch : i32;
      var<private> inPlane : i32;
      fn pixelValue(word : u32, k : u32) -> f32 {
        if (inPlane == uniforms.plane) {
          inPlane = 0;
          ch = select(ch + 1, 0, ch + 1 == uniforms.channels);
        }
        inPlane = inPlane + 1;
        return Table[ch * 256 + i32((word >> (8u * k)) & 255u)];
      }
      fn main(index : i32) {
        if (index >= uniforms.words) { return; }
        let word = bitcast<u32>(Words[index]);
        let base = index * 4;
        let planes = base / uniforms.plane;
        ch = planes % uniforms.channels;
        inPlane = base - planes * uniforms.plane;
        ${store}
      }
    `;
  }
}

/** Whether the packed route can run on the active backend (the webgpu backend, a little-endian host). */
export function packedUploadAvailable(): boolean {
  if (tf.getBackend() !== 'webgpu' || endianness() !== 'LE') return false;
  return typeof (tf.backend() as unknown as Partial<WebGpuBackendLike>).runWebGPUProgram === 'function';
}

const tableCache = new Map<string, Float32Array>();

/** table[ch * 256 + v] = fround(fround(v * scale[ch]) + bias[ch]), as the host and wasm paths compute it. */
export function normalizeTable(scale: Float32Array, bias: Float32Array): Float32Array {
  const key = `${scale.join(',')}:${bias.join(',')}`;
  let table = tableCache.get(key);
  if (table === undefined) {
    table = new Float32Array(256 * scale.length);
    for (let c = 0; c < scale.length; c++) for (let v = 0; v < 256; v++) table[c * 256 + v] = Math.fround(v * scale[c]!) + bias[c]!;
    if (tableCache.size > 16) tableCache.clear();
    tableCache.set(key, table);
  }
  return table;
}

/** The pixels as int32 words: a view when they start 4-aligned and fill whole words, else a zero-padded copy. */
export function pixelWords(pixels: Uint8Array): Int32Array {
  const words = Math.ceil(pixels.length / 4);
  if (pixels.byteOffset % 4 === 0 && pixels.length % 4 === 0) return new Int32Array(pixels.buffer, pixels.byteOffset, words);
  const padded = new Uint8Array(words * 4);
  padded.set(pixels);
  return new Int32Array(padded.buffer);
}

/**
 * n images of c planes of `plane` pixels (C,H,W, n*c*plane bytes) -> the normalised model input
 * [n, c*plane] float32 on the webgpu backend; per-channel factors as pixelScaleBias gives them.
 * Call only where packedUploadAvailable().
 */
export function packedPixelInput(pixels: Uint8Array, n: number, c: number, plane: number, scale: Float32Array, bias: Float32Array): tf.Tensor2D {
  const d = c * plane;
  const total = n * d;
  if (pixels.length !== total) throw new RangeError(`packedPixelInput: ${pixels.length} bytes for ${n} x ${c} x ${plane} pixels`);
  if (scale.length !== c || bias.length !== c) throw new RangeError(`packedPixelInput: ${scale.length}/${bias.length} factors for ${c} channels`);
  const backend = tf.backend() as unknown as WebGpuBackendLike;
  const words = pixelWords(pixels);
  const wordsT = tf.tensor1d(words, 'int32');
  const tableT = tf.tensor1d(normalizeTable(scale, bias), 'float32');
  try {
    const program = new UnpackNormalizeProgram(n, d, words.length);
    const uniforms: ProgramUniform = [
      { type: 'int32', data: [words.length] },
      { type: 'int32', data: [total] },
      { type: 'int32', data: [plane] },
      { type: 'int32', data: [c] },
    ];
    // The words are copied into the device's staging buffer here, before this returns: the
    // frame's memory is not referenced afterwards.
    const out = backend.runWebGPUProgram(program, [wordsT, tableT], 'float32', uniforms);
    return tf.engine().makeTensorFromTensorInfo(out) as tf.Tensor2D;
  } finally {
    wordsT.dispose();
    tableT.dispose();
  }
}

/** Bytes that reached the device while counting: tensor data uploads and queue.writeBuffer calls (uniforms). */
export interface UploadCount {
  /** Tensor data copied to the device (uploadToGPU's staging copies), bytes. */
  tensorBytes: number;
  /** Number of such uploads. */
  tensorUploads: number;
  /** Bytes written with queue.writeBuffer (tfjs: the uniforms of each program). */
  writeBufferBytes: number;
}

interface CountingBackend {
  uploadToGPU(dataId: object): void;
  tensorMap: { get(dataId: object): { values: unknown; resource?: unknown; dtype: string; shape: number[] } | undefined };
  queue: { writeBuffer(buffer: unknown, offset: number, data: ArrayBufferView | ArrayBuffer, dataOffset?: number, size?: number): void };
}

/**
 * Counts the bytes the webgpu backend sends to the device until stop() is called (a measurement
 * aid for benchmarks and tests; one counter at a time). Null on other backends.
 */
export function countWebGpuUploads(): { count: UploadCount; stop(): void } | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const backend = tf.backend() as unknown as CountingBackend;
  if (typeof backend.uploadToGPU !== 'function' || !backend.tensorMap || !backend.queue) return null;
  const count: UploadCount = { tensorBytes: 0, tensorUploads: 0, writeBufferBytes: 0 };
  const upload = backend.uploadToGPU;
  const ownUpload = Object.hasOwn(backend, 'uploadToGPU');
  backend.uploadToGPU = function (this: CountingBackend, dataId: object): void {
    const data = this.tensorMap.get(dataId);
    if (data && data.resource == null && data.values != null) {
      // What uploadToGPU allocates and copies: 4 bytes an element (8 for complex64).
      count.tensorBytes += (data.dtype === 'complex64' ? 8 : 4) * data.shape.reduce((a, b) => a * b, 1);
      count.tensorUploads++;
    }
    upload.call(this, dataId);
  };
  const queue = backend.queue;
  const write = queue.writeBuffer;
  const ownWrite = Object.hasOwn(queue, 'writeBuffer');
  queue.writeBuffer = (buffer, offset, data, dataOffset, size) => {
    // Offsets and sizes count elements for a typed array, bytes for an ArrayBuffer.
    const unit = ArrayBuffer.isView(data) ? ((data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1) : 1;
    count.writeBufferBytes += size !== undefined ? size * unit : data.byteLength - (dataOffset ?? 0) * unit;
    return write.call(queue, buffer, offset, data, dataOffset, size);
  };
  return {
    count,
    stop() {
      if (ownUpload) backend.uploadToGPU = upload;
      else delete (backend as Partial<CountingBackend>).uploadToGPU;
      if (ownWrite) queue.writeBuffer = write;
      else delete (queue as Partial<CountingBackend['queue']>).writeBuffer;
    },
  };
}
