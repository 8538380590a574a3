// The body of `npm run import` (src/cli/import.ts is the entry point), callable from tests.
// Exit codes: 0 done, 1 the import failed (file, pickle, security, shape errors), 2 bad usage.
import { parseArch } from '../model/arch.ts';
import { ArchError } from '../model/errors.ts';
import { PickleSecurityError } from '../model/torch-import/errors.ts';
import { describeConfig, importTorchCheckpoint, type ImportOptions } from '../model/torch-import/import.ts';
import { defaultIo, EXIT, runCommand, UsageError, withOutputLock, type CliIo } from './command.ts';
import { NORMALIZE_SPEC, normalizeRequest, optionalNum, parseFlags, positiveInt, str, type OptionSpec } from './flags.ts';

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
  --normalize imagenet   the normalisation the weights were trained with, recorded in config.json
                         (default: ImageNet's, as the paper's released ImageNet-21k models)
  --mean A,B,C --std X,Y,Z
                         explicit per-channel statistics in 0-255 units instead
  --force                replace model.safetensors and config.json in a non-empty --out
  --dry-run              check and report, write nothing
  -h, --help             this text

Example (a file fetched by the reference repo's utils/download.py):
  npm run import -- B-12_Wi-1024_res_64_imagenet21_epochs_800_weights --arch B_12-Wi_1024 --res 64 --out models/in21k`;

const SPEC: OptionSpec = {
  out: { type: 'string' },
  arch: { type: 'string' },
  res: { type: 'string' },
  channels: { type: 'string' },
  'num-classes': { type: 'string' },
  force: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  ...NORMALIZE_SPEC,
  help: { type: 'boolean', short: 'h' },
};

export function parseImportArgs(argv: string[]): ImportOptions | 'help' {
  const { raw, positionals } = parseFlags(argv, SPEC, true);
  if (raw['help']) return 'help';
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? 'no input file given' : `one input file expected, got ${positionals.length}: ${positionals.join(' ')}`);
  }
  const out = str(raw, 'out');
  const arch = str(raw, 'arch');
  if (!out && !raw['dry-run']) throw new UsageError('--out <dir> is required (or --dry-run)');
  if (arch !== undefined) {
    try {
      parseArch(arch);
    } catch (e) {
      if (e instanceof ArchError) throw new UsageError(e.message, 'arch');
      throw e;
    }
  }
  const opts: ImportOptions = { input: positionals[0]! };
  if (out !== undefined) opts.out = out;
  if (arch !== undefined) opts.arch = arch;
  const res = optionalNum(raw, 'res', positiveInt);
  const channels = optionalNum(raw, 'channels', positiveInt);
  const numClasses = optionalNum(raw, 'num-classes', positiveInt);
  if (res !== undefined) opts.res = res;
  if (channels !== undefined) opts.channels = channels;
  if (numClasses !== undefined) opts.numClasses = numClasses;
  if (raw['force']) opts.force = true;
  const norm = normalizeRequest(raw, ['imagenet']);
  if (norm?.kind === 'explicit') opts.normalization = { mean: norm.mean, std: norm.std, source: 'explicit' };
  if (raw['dry-run']) opts.dryRun = true;
  return opts;
}

export async function runImportCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  return runCommand('import', io, () => {
    const opts = parseImportArgs(argv);
    if (opts === 'help') {
      io.stdout(`${HELP}\n`);
      return EXIT.ok;
    }
    const run = async (): Promise<number> => {
      try {
        return importAndReport(opts, io);
      } catch (e) {
        if (e instanceof PickleSecurityError) io.stderr('import: the file was not loaded and nothing in it was run.\n');
        throw e;
      }
    };
    return opts.out && !opts.dryRun ? withOutputLock(opts.out, `import ${opts.input} --out ${opts.out}`, io, run) : run();
  });
}

const fmt = (v: number[] | undefined): string => (v ? v.map((x) => Number(x.toFixed(3))).join(',') : '?');

function importAndReport(opts: ImportOptions, io: CliIo): number {
  const r = importTorchCheckpoint(opts);
  const given = (k: string): string => (r.inferred.includes(k) ? 'inferred' : 'checked');
  const dtypes = Object.entries(r.dtypes)
    .map(([d, n]) => `${n} ${d}`)
    .join(', ');
  io.stdout(
    [
      `read ${r.input}: state dict at ${r.at}${r.stripped.length ? ` (stripped ${r.stripped.map((p) => `"${p}"`).join(', ')})` : ''}`,
      `model: ${describeConfig(r.config)}; ${r.numParams.toLocaleString('en-US')} parameters`,
      `  arch ${given('arch')}, res ${given('res')}, channels ${given('channels')}, classes ${given('numClasses')}`,
      `tensors: ${dtypes}${r.strided ? `; ${r.strided} strided view(s) copied` : ''}${Object.keys(r.dtypes).some((d) => d !== 'float32') ? '; converted to float32' : ''}`,
      `preprocessing: (pixel - mean) / std with mean ${fmt(r.config.preprocessing?.normalization.mean)}, std ${fmt(r.config.preprocessing?.normalization.std)} (${r.config.preprocessing?.normalization.source}; 0-255 units)`,
      r.out ? `wrote ${r.out}` : 'dry run: nothing written',
      '',
    ].join('\n'),
  );
  return EXIT.ok;
}
