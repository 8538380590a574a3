// Where a CBLAS with an sgemm may live on this machine. Nothing here is required: when no
// candidate loads, the wasm backend keeps its XNNPACK matMuls. The bare soname comes first so
// the dynamic linker's own choice (Debian's alternatives, LD_LIBRARY_PATH) wins; the explicit
// paths find the variants the linker does not point at.

export type BlasFlavour = 'openblas' | 'accelerate';

export interface BlasCandidate {
  /** What koffi.load is given: a path, or a bare name the dynamic linker resolves. */
  path: string;
  flavour: BlasFlavour;
}

export interface CandidateEnv {
  platform: NodeJS.Platform;
  arch: string;
  /** SMLP_BLAS_LIB: one library to use instead of the search (its failure is reported). */
  explicit?: string;
}

const DEBIAN_TRIPLET: Record<string, string> = {
  x64: 'x86_64-linux-gnu',
  arm64: 'aarch64-linux-gnu',
  ppc64: 'powerpc64le-linux-gnu',
  riscv64: 'riscv64-linux-gnu',
  loong64: 'loongarch64-linux-gnu',
};

function linuxCandidates(arch: string): BlasCandidate[] {
  const paths = ['libopenblas.so.0'];
  const triplet = DEBIAN_TRIPLET[arch];
  if (triplet) {
    // Debian/Ubuntu: libopenblas0-pthread, -openmp and -serial install side by side.
    for (const variant of ['openblas-pthread', 'openblas-openmp', 'openblas-serial']) paths.push(`/usr/lib/${triplet}/${variant}/libopenblas.so.0`);
  }
  // Fedora/RHEL name the threaded builds apart; Arch and source builds use the plain name.
  paths.push(
    '/usr/lib64/libopenblasp.so.0',
    '/usr/lib64/libopenblaso.so.0',
    '/usr/lib64/libopenblas.so.0',
    '/usr/lib/libopenblas.so.0',
    '/usr/local/lib/libopenblas.so.0',
    'libopenblas.so',
  );
  return paths.map((path) => ({ path, flavour: 'openblas' }));
}

/** The libraries to try, in order. */
export function blasCandidates(
  env: CandidateEnv = { platform: process.platform, arch: process.arch, explicit: process.env['SMLP_BLAS_LIB'] },
): BlasCandidate[] {
  if (env.explicit) return [{ path: env.explicit, flavour: /Accelerate|vecLib/.test(env.explicit) ? 'accelerate' : 'openblas' }];
  switch (env.platform) {
    case 'linux':
    case 'freebsd':
      return linuxCandidates(env.arch);
    case 'darwin':
      return [
        { path: '/System/Library/Frameworks/Accelerate.framework/Accelerate', flavour: 'accelerate' },
        { path: '/opt/homebrew/opt/openblas/lib/libopenblas.dylib', flavour: 'openblas' },
        { path: '/usr/local/opt/openblas/lib/libopenblas.dylib', flavour: 'openblas' },
      ];
    case 'win32':
      return [{ path: 'libopenblas.dll', flavour: 'openblas' }];
    default:
      return [{ path: 'libopenblas.so.0', flavour: 'openblas' }];
  }
}

/** The one-line advice printed when no library was found. */
export function installHint(platform: NodeJS.Platform = process.platform): string {
  if (platform === 'darwin') return 'brew install openblas';
  if (platform === 'win32') return 'put libopenblas.dll on the PATH';
  return 'apt-get install libopenblas0-pthread';
}
