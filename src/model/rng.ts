// The generator lives in src/shared/random.ts (the pipeline uses it too); re-exported here for
// the model and trainer modules that import it from this path.
export { Rng, seedHash, type RngState } from '../shared/random.ts';
