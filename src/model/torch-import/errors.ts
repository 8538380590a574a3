// Typed errors of the PyTorch importer. Each names where it happened (an archive entry, a byte
// offset in the pickle, a tensor key) so callers can report without parsing messages.

/** The file is not a readable zip archive, or an entry in it is damaged. */
export class ZipError extends Error {
  override readonly name: string = 'ZipError';
  constructor(
    readonly where: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${where}: ${reason}`, options);
  }
}

/** The pickle stream is malformed or uses something this reader does not support. */
export class PickleError extends Error {
  override readonly name: string = 'PickleError';
  constructor(
    readonly offset: number,
    reason: string,
  ) {
    super(`pickle at byte ${offset}: ${reason}`);
  }
}

/**
 * The pickle names a global that is not on the allow-list (e.g. os.system, builtins.eval). Nothing
 * was resolved or called: the reader refuses at the first such name, before building anything.
 */
export class PickleSecurityError extends PickleError {
  override readonly name: string = 'PickleSecurityError';
  constructor(
    readonly global: string,
    offset: number,
    hint = '',
  ) {
    super(offset, `refusing global ${JSON.stringify(global)}: not on the allow-list of state-dict types${hint ? ` (${hint})` : ''}`);
  }
}

/** A torch.save file that parsed but does not hold what it should (layout, storages, tensors). */
export class TorchFileError extends Error {
  override readonly name: string = 'TorchFileError';
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${reason}`, options);
  }
}

/** The tensors do not make one of our models, or do not match what the caller asked for. */
export class TorchImportError extends Error {
  override readonly name: string = 'TorchImportError';
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${reason}`, options);
  }
}
