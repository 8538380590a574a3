export class ShardJobError extends Error {
  readonly path: string | undefined;
  constructor(message: string, path?: string) {
    super(path ? `${path}: ${message}` : message);
    this.name = 'ShardJobError';
    this.path = path;
  }
}
