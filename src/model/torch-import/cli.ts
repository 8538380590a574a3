// The body of `npm run import` (src/cli/import.ts is the entry point), callable from tests.
// Exit codes: 0 done, 1 the import failed (file, pickle, security, shape errors), 2 bad usage.
import { parseArgs } from 'node:util';
import { ArchError } from '../errors.ts';
import { parseArch } from '../arch.ts';
import { describeConfig, importTorchCheckpoint, type ImportOptions } from './import.ts';
import { PickleSecurityError } from './errors.ts';

export const HELP = `Usage: npm run import -- <file.pt> --out <dir> [options]

Convert a PyTorch checkpoint saved with torch.save (e.g. the paper authors' published weights)
into our model directory: <dir>/model.safetensors + <dir>/config.json, loadable by training,
evaluation and PyTorch alike.

The file is read without Python and without running anything from it: the pickle inside is
interpreted by a small reader that only knows tensors, storages and OrderedDict, and refuses any
other global (os.system, builtins.eval, ...) with an error naming it.

The state dict may be the whole file, or under "model", "state_dict" or "model_state_dict";
"module." (DataParallel) and "_orig_mod." (torch.compile) prefixes are stripped. float16,
bfloat16 and float64 tensors become float32; strided views are copied into order.

Options (each is checked against the tensors; left out, it is inferred from them):
  --out <dir>            model directory to write (new or empty; see --force)
  --arch <name>          B_<depth>-Wi_<width>[-Ex_<e>] or S_<depth>-Wi_<width>
                         (inferred: depth from the blocks, width from linear_in)
  --res <n>              input resolution (inferred from linear_in: channels*res*res)
  --channels <n>         input channels (default 3, or linear_in width / res^2 with --res)
  --num-classes <n>      classes (inferred from linear_out)
  --force                replace model.safetensors and config.json in a non-empty --out
  --dry-run              check and report, write nothing
  -h, --help             this text

Example (a file fetched by the reference repo's utils/download.py):
  npm run import -- B-12_Wi-1024_res_64_imagenet21_epochs_800_weights --arch B_12-Wi_1024 --res 64 --out models/in21k`;

class UsageError extends Error {}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got "${v}"`);
  return n;
}

export function parseImportArgs(argv: string[]): ImportOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        out: { type: 'string' },
        arch: { type: 'string' },
        res: { type: 'string' },
        channels: { type: 'string' },
        'num-classes': { type: 'string' },
        force: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) return 'help';
  if (parsed.positionals.length !== 1) {
    throw new UsageError(parsed.positionals.length === 0 ? 'no input file given' : `one input file expected, got ${parsed.positionals.length}: ${parsed.positionals.join(' ')}`);
  }
  if (!v.out && !v['dry-run']) throw new UsageError('--out <dir> is required (or --dry-run)');
  if (v.arch !== undefined) {
    try {
      parseArch(v.arch);
    } catch (e) {
      if (e instanceof ArchError) throw new UsageError(`--arch: ${e.message}`);
      throw e;
    }
  }
  const opts: ImportOptions = { input: parsed.positionals[0]! };
  if (v.out !== undefined) opts.out = v.out;
  if (v.arch !== undefined) opts.arch = v.arch;
  const res = positiveInt('res', v.res);
  const channels = positiveInt('channels', v.channels);
  const numClasses = positiveInt('num-classes', v['num-classes']);
  if (res !== undefined) opts.res = res;
  if (channels !== undefined) opts.channels = channels;
  if (numClasses !== undefined) opts.numClasses = numClasses;
  if (v.force) opts.force = true;
  if (v['dry-run']) opts.dryRun = true;
  return opts;
}

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIo: CliIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

export async function runImportCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let opts: ImportOptions | 'help';
  try {
    opts = parseImportArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.err(`error: ${e.message}\nRun with --help for usage.\n`);
    return 2;
  }
  if (opts === 'help') {
    io.out(`${HELP}\n`);
    return 0;
  }
  try {
    const r = importTorchCheckpoint(opts);
    const given = (k: string): string => (r.inferred.includes(k) ? 'inferred' : 'checked');
    const dtypes = Object.entries(r.dtypes).map(([d, n]) => `${n} ${d}`).join(', ');
    io.out([
      `read ${r.input}: state dict at ${r.at}${r.stripped.length ? ` (stripped ${r.stripped.map((p) => `"${p}"`).join(', ')})` : ''}`,
      `model: ${describeConfig(r.config)}; ${r.numParams.toLocaleString('en-US')} parameters`,
      `  arch ${given('arch')}, res ${given('res')}, channels ${given('channels')}, classes ${given('numClasses')}`,
      `tensors: ${dtypes}${r.strided ? `; ${r.strided} strided view(s) copied` : ''}${Object.keys(r.dtypes).some((d) => d !== 'float32') ? '; converted to float32' : ''}`,
      r.out ? `wrote ${r.out}` : 'dry run: nothing written',
      '',
    ].join('\n'));
    return 0;
  } catch (e) {
    const err = e as Error;
    io.err(`error: ${err.message}\n`);
    if (e instanceof PickleSecurityError) io.err('The file was not loaded and nothing in it was run.\n');
    return 1;
  }
}
