// npm run import -- <file.pt> --out <dir> [--arch ...] [--res ...]: a torch.save checkpoint (the
// paper authors' weights) -> our model directory, read without executing the pickle. See
// src/cli/import-main.ts for the options.
import * as tf from '@tensorflow/tfjs';
import { runImportCli } from './import-main.ts';

// The model is only built to be written: the plain cpu backend, without its "use tfjs-node" banner.
tf.enableProdMode();
await tf.setBackend('cpu');
process.exit(await runImportCli(process.argv.slice(2)));
