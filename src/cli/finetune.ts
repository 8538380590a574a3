// npm run finetune: fine-tunes a pre-trained model (new head; linear probe or full fine-tuning)
// on ring-backed loaders at the checkpoint's resolution. See --help.
import { openTrainFeeds } from './feeds.ts';
import { runFinetuneCli } from './finetune-main.ts';

process.exit(
  await runFinetuneCli(process.argv.slice(2), (opts) =>
    openTrainFeeds(opts, opts.res!, opts.crop, opts.quiet ? undefined : (line) => process.stderr.write(`${line}\n`)),
  ),
);
