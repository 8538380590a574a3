// npm run finetune: fine-tunes a pre-trained model (new head; linear probe or full fine-tuning)
// on ring-backed loaders at the checkpoint's resolution. See --help.
import { runFinetuneCli } from '../train/finetune-cli.ts';
import { openTrainFeeds } from '../train/loader-feeds.ts';

process.exit(
  await runFinetuneCli(process.argv.slice(2), (opts) =>
    openTrainFeeds(opts, opts.res!, opts.crop, opts.quiet ? undefined : (line) => process.stderr.write(`${line}\n`)),
  ),
);
