// npm run bench -- <name> [options]: dispatches to bench/<name>.ts. Every benchmark prints one
// JSON object per line (machine-readable), progress and notes go to stderr.
const benches: Record<string, string> = {
  shard: './shard.ts',
  'shard-tasks': './shard-tasks.ts',
  pipeline: './pipeline.ts',
  augment: './augment.ts',
  train: './train.ts',
  e2e: './e2e.ts',
  blas: './blas.ts',
  'image-decode': './image-decode.ts',
  serve: './serve.ts',
  upload: './upload.ts',
  frame: './frame.ts',
  'loader-stages': './loader-stages.ts',
  's3-read': './s3-read.ts',
  's3-write': './s3-write.ts',
};

const [name, ...rest] = process.argv.slice(2);
if (!name || name === '--help' || name === '-h' || !(name in benches)) {
  process.stdout.write(`Usage: npm run bench -- <${Object.keys(benches).join('|')}> [options]\n(each takes --help)\n`);
  process.exit(name && !['--help', '-h'].includes(name) ? 2 : 0);
}
process.argv = [process.argv[0]!, new URL(benches[name]!, import.meta.url).pathname, ...rest];
await import(benches[name]!);
