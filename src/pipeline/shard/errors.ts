import { PathError } from '../errors.ts';

export class ShardJobError extends PathError {}
