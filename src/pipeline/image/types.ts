/** Pixels as every stage of the image pipeline exchanges them. */
export interface RawImage {
  /** Interleaved HWC uint8, row-major, tightly packed: length === width * height * channels. */
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3;
}

/**
 * A file that cannot be turned into pixels. Typed so that a shard job can count and skip bad
 * files (ImageNet-21k has a few) instead of dying on the first one.
 */
export class ImageDecodeError extends Error {
  readonly file?: string;
  readonly reason: string;

  constructor(reason: string, file?: string) {
    super(file === undefined ? reason : `${file}: ${reason}`);
    this.name = 'ImageDecodeError';
    this.reason = reason;
    if (file !== undefined) this.file = file;
  }
}
