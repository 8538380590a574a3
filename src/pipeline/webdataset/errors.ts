/**
 * Typed errors for the WebDataset module. Every error carries where it happened (shard url,
 * tar member, byte offset, sample key) both as fields, for code, and in the message, for
 * people reading a log line from a run that died hours in.
 */

export interface ErrorLocation {
  url?: string;
  member?: string;
  offset?: number;
  key?: string;
}

function describe(where: ErrorLocation): string {
  const parts: string[] = [];
  if (where.url !== undefined) parts.push(`url ${JSON.stringify(where.url)}`);
  if (where.member !== undefined) parts.push(`member ${JSON.stringify(where.member)}`);
  if (where.key !== undefined) parts.push(`key ${JSON.stringify(where.key)}`);
  if (where.offset !== undefined) parts.push(`offset ${where.offset}`);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

export class WebDatasetError extends Error {
  readonly url?: string;
  readonly member?: string;
  readonly offset?: number;
  readonly key?: string;

  constructor(message: string, where: ErrorLocation = {}, options?: { cause?: unknown }) {
    super(message + describe(where), options);
    this.name = new.target.name;
    if (where.url !== undefined) this.url = where.url;
    if (where.member !== undefined) this.member = where.member;
    if (where.offset !== undefined) this.offset = where.offset;
    if (where.key !== undefined) this.key = where.key;
  }
}

/** The bytes are not a tar archive we can walk (bad checksum, truncation, bad field). */
export class TarFormatError extends WebDatasetError {}

/** The tar is fine but its members do not form valid samples, or a payload does not decode. */
export class SampleFormatError extends WebDatasetError {}

/** A shard or index location cannot be opened or fetched. */
export class UrlError extends WebDatasetError {}
