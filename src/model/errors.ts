// Typed errors for the model package: each carries what went wrong and where (a name, a path,
// a tensor key), so callers can report it without parsing messages.

export class ArchError extends Error {
  override readonly name = 'ArchError';
  constructor(
    readonly arch: string,
    reason: string,
  ) {
    super(`bad architecture ${JSON.stringify(arch)}: ${reason}`);
  }
}

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
  constructor(
    readonly where: string,
    reason: string,
  ) {
    super(`${where}: ${reason}`);
  }
}

export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${reason}`, options);
  }
}
