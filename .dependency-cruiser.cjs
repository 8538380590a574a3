// The layering rule of the README ("Project layout"), checked by `npm run lint`:
//   pipeline -> (the DataFeed contract in shared) -> train; model has no I/O layers below it;
//   cli is the only place where the layers meet.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'shared-is-a-leaf',
      comment: 'src/shared holds contracts and utilities every layer uses; it imports none of them.',
      severity: 'error',
      from: { path: '^src/shared/' },
      to: { path: '^src/(pipeline|model|train|cli|plot)/' },
    },
    {
      name: 'webdataset-self-contained',
      comment: 'The WebDataset format module is usable on its own: only itself and src/shared.',
      severity: 'error',
      from: { path: '^src/pipeline/webdataset/' },
      to: { path: '^src/', pathNot: '^src/(pipeline/webdataset|shared)/' },
    },
    {
      name: 'pipeline-upstream-of-train',
      comment: 'Data flows one way: the pipeline never reaches into the model, the trainer or the commands.',
      severity: 'error',
      from: { path: '^src/pipeline/' },
      to: { path: '^src/(model|train|cli|plot)/' },
    },
    {
      name: 'model-has-no-io-layers',
      comment: 'The model (MLPs, weights, files) knows nothing of data pipelines, training loops or commands.',
      severity: 'error',
      from: { path: '^src/model/' },
      to: { path: '^src/(pipeline|train|cli|plot)/' },
    },
    {
      name: 'train-sees-data-only-through-the-contract',
      comment: 'The trainer consumes batches through src/shared/data-feed.ts, never the pipeline itself; it prints nothing of the commands.',
      severity: 'error',
      from: { path: '^src/train/' },
      to: { path: '^src/(pipeline|cli|plot)/' },
    },
    {
      name: 'plot-reads-metrics-only',
      severity: 'error',
      from: { path: '^src/plot/' },
      to: { path: '^src/(pipeline|train|cli)/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.js', '.json'] },
  },
};
