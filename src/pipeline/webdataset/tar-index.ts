/**
 * Random access into a local shard: one header scan at open, then positioned reads of any
 * member by (offset, size) on a single file descriptor.
 */
import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { TarFormatError, WebDatasetError } from './errors.ts';
import { groupMemberInfos, type IndexedSample } from './samples.ts';
import { scanTarFd } from './tar-reader.ts';

export class TarFileReader {
  readonly path: string;
  readonly samples: IndexedSample[];
  readonly fileSize: number;
  private fh: FileHandle | null;

  private constructor(path: string, fh: FileHandle, fileSize: number, samples: IndexedSample[]) {
    this.path = path;
    this.fh = fh;
    this.fileSize = fileSize;
    this.samples = samples;
  }

  static async open(path: string): Promise<TarFileReader> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const infos = await scanTarFd(fh.fd, size, path);
      return new TarFileReader(path, fh, size, groupMemberInfos(infos, { url: path }));
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  private handle(): FileHandle {
    if (this.fh === null) throw new WebDatasetError(`reader is closed`, { url: this.path });
    return this.fh;
  }

  private target(offset: number, size: number, into?: Uint8Array): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0 || offset + size > this.fileSize) {
      throw new TarFormatError(`member range [${offset}, ${offset + size}) is outside the ${this.fileSize}-byte file`, { url: this.path, offset });
    }
    if (into === undefined) return Buffer.allocUnsafeSlow(size);
    if (into.length < size) throw new RangeError(`readMember: buffer of ${into.length} bytes cannot hold ${size}`);
    return into.length === size ? into : into.subarray(0, size);
  }

  /** Reads `size` bytes at `offset` into `into` (or a new buffer); returns exactly those bytes. */
  async readMember(offset: number, size: number, into?: Uint8Array): Promise<Uint8Array> {
    const fh = this.handle();
    const out = this.target(offset, size, into);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(out, got, size - got, offset + got);
      if (bytesRead === 0) throw new TarFormatError(`file shrank: read ${got} of ${size} bytes`, { url: this.path, offset });
      got += bytesRead;
    }
    return out;
  }

  /** The synchronous twin, for worker threads that would rather not await per member. */
  readMemberSync(offset: number, size: number, into?: Uint8Array): Uint8Array {
    const fh = this.handle();
    const out = this.target(offset, size, into);
    let got = 0;
    while (got < size) {
      const n = readSync(fh.fd, out, got, size - got, offset + got);
      if (n === 0) throw new TarFormatError(`file shrank: read ${got} of ${size} bytes`, { url: this.path, offset });
      got += n;
    }
    return out;
  }

  /** All payloads of sample `index`, keyed by extension. */
  async readSample(index: number): Promise<Record<string, Uint8Array>> {
    const s = this.samples[index];
    if (s === undefined) throw new RangeError(`sample ${index} out of range (0..${this.samples.length - 1})`);
    const out: Record<string, Uint8Array> = {};
    for (const [ext, m] of Object.entries(s.members)) out[ext] = await this.readMember(m.offset, m.size);
    return out;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }
}
