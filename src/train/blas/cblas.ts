// A CBLAS found at run time (OpenBLAS, Accelerate) called through koffi, an FFI whose npm
// package ships prebuilt binaries. Operands are Float32Array views of the wasm heap: koffi passes
// a typed array's own memory as the pointer (checked: the address C sees lies inside the heap),
// so the tfjs wasm backend's tensors go to sgemm with no copy in or out. Everything is optional:
// koffi not installed, no library, or SMLP_BLAS=off all give a reason instead of a binding.
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { blasCandidates, installHint, type BlasCandidate, type BlasFlavour } from './find-library.ts';

// CBLAS enum values (cblas.h), the same in OpenBLAS, Accelerate and the reference CBLAS.
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

export type BlasThreading = 'pthread' | 'openmp' | 'serial' | 'system';

export interface Cblas {
  /** "OpenBLAS 0.3.21" or "Accelerate". */
  readonly name: string;
  readonly path: string;
  readonly flavour: BlasFlavour;
  readonly threading: BlasThreading;
  /**
   * C = alpha op(A) op(B) + beta C on row-major matrices stored in `heap`; a, b, c are float
   * offsets into it, op(A) is m x k, op(B) k x n, ld* the row lengths as stored.
   */
  sgemm(
    heap: Float32Array,
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    beta: number,
    c: number,
    ldc: number,
  ): void;
  /** y = alpha op(A) x + beta y, A stored m x n row-major at offset a. */
  sgemv(
    heap: Float32Array,
    trans: boolean,
    m: number,
    n: number,
    alpha: number,
    a: number,
    lda: number,
    x: number,
    incx: number,
    beta: number,
    y: number,
    incy: number,
  ): void;
  /** Sets the library's thread count where it has a call for it; returns the count in effect (0: not controllable). */
  setThreads(n: number): number;
  threads(): number;
}

export type BlasLookup = { ok: true; blas: Cblas } | { ok: false; reason: string; tried: string[] };

/** The minimal koffi surface used here (koffi is an optional dependency, so no import of its types). */
interface KoffiLibrary {
  func(declaration: string): (...args: unknown[]) => unknown;
}
interface Koffi {
  load(path: string): KoffiLibrary;
}

export interface CblasLoadOptions {
  /** Libraries to try (default: blasCandidates() for this platform and SMLP_BLAS_LIB). */
  candidates?: BlasCandidate[];
  /** How koffi is obtained (tests simulate it missing). */
  requireKoffi?: () => Koffi;
  /** SMLP_BLAS's value; off/0/false/xnnpack switch BLAS off. */
  switch?: string | undefined;
}

const require = createRequire(import.meta.url);

export function blasSwitchedOff(value: string | undefined = process.env['SMLP_BLAS']): boolean {
  return value !== undefined && ['off', '0', 'false', 'no', 'xnnpack'].includes(value.trim().toLowerCase());
}

function firstLine(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  const line = s.split('\n', 1)[0] ?? '';
  return line.length > 160 ? `${line.slice(0, 160)}...` : line;
}

const THREADING: Record<number, BlasThreading> = { 0: 'serial', 1: 'pthread', 2: 'openmp' };

function bind(koffi: Koffi, candidate: BlasCandidate): Cblas {
  const lib = koffi.load(candidate.path);
  const gemm = lib.func(
    'void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)',
  );
  const gemv = lib.func(
    'void cblas_sgemv(int order, int trans, int M, int N, float alpha, const float *A, int lda, const float *X, int incX, float beta, float *Y, int incY)',
  );
  let name = 'Accelerate';
  let threading: BlasThreading = 'system';
  let setThreads = (_n: number): number => 0;
  let threads = (): number => 0;
  if (candidate.flavour === 'openblas') {
    const config = lib.func('const char *openblas_get_config()')() as string;
    const parallel = lib.func('int openblas_get_parallel()')() as number;
    const set = lib.func('void openblas_set_num_threads(int n)');
    const get = lib.func('int openblas_get_num_threads()');
    name = /^OpenBLAS [\d.]+/.exec(config)?.[0] ?? 'OpenBLAS';
    threading = THREADING[parallel] ?? 'pthread';
    threads = () => get() as number;
    setThreads = (n) => {
      set(n);
      return threads();
    };
  }
  return {
    name,
    path: candidate.path,
    flavour: candidate.flavour,
    threading,
    sgemm(heap, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      gemm(
        ROW_MAJOR,
        transA ? TRANS : NO_TRANS,
        transB ? TRANS : NO_TRANS,
        m,
        n,
        k,
        alpha,
        heap.subarray(a),
        lda,
        heap.subarray(b),
        ldb,
        beta,
        heap.subarray(c),
        ldc,
      );
    },
    sgemv(heap, trans, m, n, alpha, a, lda, x, incx, beta, y, incy) {
      gemv(ROW_MAJOR, trans ? TRANS : NO_TRANS, m, n, alpha, heap.subarray(a), lda, heap.subarray(x), incx, beta, heap.subarray(y), incy);
    },
    setThreads,
    threads,
  };
}

/** Finds and binds a CBLAS, or says why not. */
export function loadCblas(opts: CblasLoadOptions = {}): BlasLookup {
  const candidates = opts.candidates ?? blasCandidates();
  if (blasSwitchedOff('switch' in opts ? opts.switch : process.env['SMLP_BLAS'])) return { ok: false, reason: 'BLAS switched off (SMLP_BLAS=off)', tried: [] };
  let koffi: Koffi;
  try {
    koffi = (opts.requireKoffi ?? (() => require('koffi') as Koffi))();
  } catch (e) {
    return { ok: false, reason: `koffi (optional dependency) did not load: ${firstLine(e)}`, tried: [] };
  }
  const tried: string[] = [];
  const errors: string[] = [];
  for (const c of candidates) {
    tried.push(c.path);
    try {
      return { ok: true, blas: bind(koffi, c) };
    } catch (e) {
      errors.push(`${c.path}: ${firstLine(e)}`);
    }
  }
  const what = candidates.every((c) => c.flavour === 'accelerate') ? 'Accelerate' : 'libopenblas';
  // A library that exists but lacks a symbol is worth naming; "cannot open" for each path is not.
  const odd = errors.filter((e) => !/cannot open|No such file|not found|image not found|no such file/i.test(e));
  return {
    ok: false,
    reason: `${what} not found; ${installHint()} for ~3x${odd.length ? ` (${odd.join('; ')})` : ''}`,
    tried,
  };
}

let cached: BlasLookup | null = null;

/** The process-wide lookup, done once on first use. */
export function systemCblas(): BlasLookup {
  cached ??= loadCblas();
  return cached;
}

/** BLAS threads when the caller has nothing to say: every core the loader's workers leave. */
export function defaultBlasThreads(loaderWorkers = 0, cores = availableParallelism()): number {
  return Math.max(1, cores - loaderWorkers);
}

/** A command's BLAS threads: --threads if given, else what its loader workers leave. */
export function blasThreadsFor(o: { threads?: number | undefined; workers: number }): number {
  return o.threads ?? defaultBlasThreads(o.workers);
}

/** "OpenBLAS 0.3.21, 2 threads". */
export function describeCblas(blas: Cblas): string {
  const n = blas.threads();
  const threads = n > 0 ? `${n} thread${n === 1 ? '' : 's'}` : 'threads as the system sets them';
  const kind = blas.threading === 'pthread' || blas.threading === 'system' ? '' : ` (${blas.threading})`;
  return `${blas.name}${kind}, ${threads}`;
}

export class BlasUnavailableError extends Error {
  override readonly name = 'BlasUnavailableError';
  constructor(readonly reason: string) {
    super(`no BLAS to route matMuls to: ${reason}`);
  }
}
