/** An error about a file or folder: the message starts with its path, and `file` holds it. */
export class PathError extends Error {
  readonly file: string | undefined;
  constructor(message: string, file?: string) {
    super(file ? `${file}: ${message}` : message);
    this.name = new.target.name;
    this.file = file;
  }
}
