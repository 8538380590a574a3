// npm run eval: top-1/top-5 and loss of a model on a dataset (centre crops), with optional
// test-time augmentation (--tta N) and ImageNet ReaL scoring (--real). See --help.
import { runEvalCli } from './eval-main.ts';
import { openEvalFeed } from './feeds.ts';

process.exit(await runEvalCli(process.argv.slice(2), openEvalFeed));
