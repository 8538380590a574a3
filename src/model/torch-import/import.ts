// From a torch.save file to our model directory: find the state dict in the object graph, undo
// the key prefixes that wrappers add, work out (or check) the architecture and input shape from
// the tensor shapes, check every name and shape against layout.ts, convert to float32, and write
// model.safetensors + config.json with saveModel, atomically.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { inputDim, parseArch, type ArchSpec, type ModelShape } from '../arch.ts';
import { fsyncDir } from '../../shared/atomic-write.ts';
import { CONFIG_FILE, MODEL_FILE, saveModel } from '../checkpoint.ts';
import { numel, paramLayout } from '../layout.ts';
import { Mlp, type HostTensor, type ModelConfig } from '../mlp.ts';
import { TorchImportError } from './errors.ts';
import { PyDict, describe, type PyValue } from './pickle.ts';
import { TorchFile, TorchTensor, type TorchDtype } from './torch-load.ts';
import { checkNormalization, DEFAULT_EVAL_CROP, imagenetNormalization, type Normalization, type Provenance } from '../preprocessing.ts';

/** Keys under which training scripts nest the state dict, tried in this order. */
export const STATE_DICT_KEYS = ['model', 'state_dict', 'model_state_dict'] as const;
/** Prefixes added by nn.DataParallel / DistributedDataParallel and by torch.compile. */
export const WRAPPER_PREFIXES = ['module.', '_orig_mod.'] as const;

const FLOAT_DTYPES: ReadonlySet<TorchDtype> = new Set(['float32', 'float16', 'bfloat16', 'float64']);

export interface FoundStateDict {
  /** Where it was: "top level" or the key, e.g. "model". */
  at: string;
  /** Our names (prefixes stripped) -> tensors, in file order. */
  tensors: Map<string, TorchTensor>;
  /** The prefixes that were stripped, e.g. ["module."]. */
  stripped: string[];
}

function isStateDict(v: PyValue | undefined): v is PyDict {
  return v instanceof PyDict && v.map.size > 0 && [...v.map.values()].every((x) => x instanceof TorchTensor);
}

/** `key` without leading wrapper prefixes (any number, any order: "module._orig_mod.x" -> "x"). */
export function stripWrapperPrefixes(key: string): { key: string; stripped: string[] } {
  const stripped: string[] = [];
  for (let again = true; again; ) {
    again = false;
    for (const p of WRAPPER_PREFIXES) {
      if (key.startsWith(p)) {
        key = key.slice(p.length);
        stripped.push(p);
        again = true;
      }
    }
  }
  return { key, stripped };
}

/**
 * The state dict inside a torch.save object: the top-level dict if every value is a tensor,
 * otherwise the first of "model", "state_dict", "model_state_dict" that is one.
 */
export function findStateDict(root: PyValue, where: string): FoundStateDict {
  let dict: PyDict | null = null;
  let at = 'top level';
  if (isStateDict(root)) dict = root;
  else if (root instanceof PyDict) {
    for (const k of STATE_DICT_KEYS) {
      const v = root.get(k);
      if (isStateDict(v)) {
        dict = v;
        at = JSON.stringify(k);
        break;
      }
    }
  }
  if (!dict) {
    const what =
      root instanceof PyDict
        ? `a dict with keys [${[...root.map.keys()]
            .slice(0, 20)
            .map((k) => JSON.stringify(k))
            .join(', ')}]`
        : describe(root);
    throw new TorchImportError(
      where,
      `no state dict found: the file holds ${what}; expected a dict of tensors at the top level or under ${STATE_DICT_KEYS.map((k) => `"${k}"`).join(', ')}`,
    );
  }
  const tensors = new Map<string, TorchTensor>();
  const prefixes = new Set<string>();
  for (const [k, v] of dict.map) {
    if (typeof k !== 'string') throw new TorchImportError(where, `state dict key ${String(k)} is not a string`);
    const s = stripWrapperPrefixes(k);
    s.stripped.forEach((p) => prefixes.add(p));
    if (tensors.has(s.key)) throw new TorchImportError(where, `two tensors become ${JSON.stringify(s.key)} once wrapper prefixes are stripped`);
    tensors.set(s.key, v as TorchTensor);
  }
  return { at, tensors, stripped: [...prefixes] };
}

/** What the caller asked for; anything left out is inferred from the tensors. */
export interface ModelRequest {
  arch?: string;
  res?: number;
  channels?: number;
  numClasses?: number;
}

/** What the tensor shapes say, as far as they say it. */
export interface ShapeEvidence {
  kind: 'bottleneck' | 'standard';
  width?: number;
  inputDim?: number;
  numClasses?: number;
  depth: number;
  expansion?: number;
  /** "B_1-Wi_8" when width is known. */
  arch?: string;
}

function shapeOf(shapes: ReadonlyMap<string, readonly number[]>, key: string, rank: number): readonly number[] | undefined {
  const s = shapes.get(key);
  return s && s.length === rank ? s : undefined;
}

export function shapeEvidence(shapes: ReadonlyMap<string, readonly number[]>): ShapeEvidence {
  const indices = (re: RegExp): number => {
    let n = 0;
    for (const k of shapes.keys()) {
      const m = re.exec(k);
      if (m) n = Math.max(n, Number(m[1]) + 1);
    }
    return n;
  };
  const blocks = indices(/^blocks\.(\d+)\./);
  const layers = indices(/^layers\.(\d+)\./);
  const kind = layers > 0 && blocks === 0 ? 'standard' : 'bottleneck';
  const lin = shapeOf(shapes, 'linear_in.weight', 2);
  const lout = shapeOf(shapes, 'linear_out.weight', 2);
  const ev: ShapeEvidence = { kind, depth: kind === 'standard' ? layers + 1 : blocks };
  if (lin) {
    ev.width = lin[0]!;
    ev.inputDim = lin[1]!;
  }
  if (lout) ev.numClasses = lout[0]!;
  if (kind === 'bottleneck' && ev.width) {
    const b0 = shapeOf(shapes, 'blocks.0.block.0.weight', 2);
    ev.expansion = b0 && b0[0]! % ev.width === 0 ? b0[0]! / ev.width : 4;
  }
  if (ev.width) {
    ev.arch =
      kind === 'standard' ? `S_${ev.depth}-Wi_${ev.width}` : `B_${ev.depth}-Wi_${ev.width}${ev.expansion && ev.expansion !== 4 ? `-Ex_${ev.expansion}` : ''}`;
  }
  return ev;
}

function describeEvidence(ev: ShapeEvidence): string {
  if (!ev.arch) return 'the tensors have no 2-D linear_in.weight, so they are not one of our MLPs';
  const n = ev.inputDim!;
  const as = [3, 1]
    .map((c) => ({ c, r: Math.round(Math.sqrt(n / c)) }))
    .filter(({ c, r }) => c * r * r === n)
    .map(({ c, r }) => `${c}x${r}x${r}`);
  return `the tensors look like ${ev.arch} with ${n} inputs${as.length ? ` (${as.join(' or ')})` : ''} and ${ev.numClasses ?? '?'} classes`;
}

export interface ResolvedModel {
  config: ModelConfig;
  spec: ArchSpec;
  /** Which of arch, res, channels, numClasses came from the tensors rather than the caller. */
  inferred: string[];
}

/**
 * The model the tensors are meant for: each field of `req` if given, else inferred (arch from the
 * keys and linear_in, classes from linear_out, res from linear_in's input width c*res*res given
 * channels - or channels from it given res; channels default to 3).
 */
export function resolveModel(ev: ShapeEvidence, req: ModelRequest, where: string): ResolvedModel {
  const inferred: string[] = [];
  const cannot = (what: string, why: string): never => {
    throw new TorchImportError(where, `cannot infer ${what}: ${why}; pass it explicitly`);
  };
  let spec: ArchSpec;
  if (req.arch !== undefined) spec = parseArch(req.arch);
  else {
    if (!ev.arch) cannot('--arch', describeEvidence(ev));
    spec = parseArch(ev.arch!);
    inferred.push('arch');
  }
  let numClasses = req.numClasses;
  if (numClasses === undefined) {
    if (ev.numClasses === undefined) cannot('--num-classes', 'there is no 2-D linear_out.weight');
    numClasses = ev.numClasses!;
    inferred.push('numClasses');
  }
  let { res, channels } = req;
  if (res === undefined || channels === undefined) {
    if (ev.inputDim === undefined) cannot(res === undefined ? '--res' : '--channels', 'there is no 2-D linear_in.weight');
    const n = ev.inputDim!;
    if (channels === undefined) {
      if (res !== undefined && n % (res * res) === 0 && n / (res * res) >= 1) channels = n / (res * res);
      else channels = 3;
      inferred.push('channels');
    }
    if (res === undefined) {
      const r = Math.round(Math.sqrt(n / channels));
      if (r < 1 || channels * r * r !== n) cannot('--res', `linear_in takes ${n} inputs, which is not ${channels} x res x res`);
      res = r;
      inferred.push('res');
    }
  }
  return { config: { arch: spec.name, res: res!, channels: channels!, numClasses }, spec, inferred };
}

const LIST_MAX = 12;
function list(items: string[]): string {
  return items.length <= LIST_MAX ? items.join(', ') : `${items.slice(0, LIST_MAX).join(', ')}, ... (${items.length - LIST_MAX} more)`;
}

/** Throws TorchImportError listing every missing, unexpected, mis-shaped and non-float tensor. */
export function checkTensors(found: FoundStateDict, model: ResolvedModel, ev: ShapeEvidence, where: string): void {
  const layout = paramLayout(model.spec, model.config);
  const expected = new Map(layout.map((e) => [e.name, e.shape]));
  const missing = layout.map((e) => e.name).filter((k) => !found.tensors.has(k));
  const unexpected = [...found.tensors.keys()].filter((k) => !expected.has(k));
  const wrong: string[] = [];
  const badType: string[] = [];
  for (const [k, shape] of expected) {
    const t = found.tensors.get(k);
    if (!t) continue;
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      wrong.push(`${k} is [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    if (!FLOAT_DTYPES.has(t.dtype)) badType.push(`${k} (${t.dtype})`);
  }
  if (!missing.length && !unexpected.length && !wrong.length && !badType.length) return;
  const c = model.config;
  const lines = [
    `the state dict (${found.at}${found.stripped.length ? `, prefixes ${found.stripped.map((p) => `"${p}"`).join(' ')} stripped` : ''}) does not fit ${c.arch} at res ${c.res} with ${c.channels} channels and ${c.numClasses} classes:`,
  ];
  if (missing.length) lines.push(`  missing (${missing.length}): ${list(missing)}`);
  if (unexpected.length) lines.push(`  unexpected (${unexpected.length}): ${list(unexpected)}`);
  if (wrong.length) lines.push(`  wrong shape (${wrong.length}): ${list(wrong)}`);
  if (badType.length) lines.push(`  not floating point (${badType.length}): ${list(badType)}`);
  lines.push(`  ${describeEvidence(ev)}`);
  throw new TorchImportError(where, lines.join('\n'));
}

export interface ImportedState {
  config: ModelConfig;
  inferred: string[];
  at: string;
  stripped: string[];
  /** Tensors converted from each dtype, e.g. { float16: 10 }. */
  dtypes: Partial<Record<TorchDtype, number>>;
  /** How many tensors were non-contiguous views (copied into row-major order). */
  strided: number;
  /** Our parameters, in layout order and PyTorch layout, float32. */
  tensors: Map<string, HostTensor>;
}

/** The model's tensors from an opened torch.save file, checked and converted. */
export function extractModel(file: TorchFile, req: ModelRequest = {}): ImportedState {
  const where = file.path;
  const found = findStateDict(file.root, where);
  const shapes = new Map([...found.tensors].map(([k, t]) => [k, t.shape]));
  const ev = shapeEvidence(shapes);
  const model = resolveModel(ev, req, where);
  checkTensors(found, model, ev, where);
  const dtypes: Partial<Record<TorchDtype, number>> = {};
  let strided = 0;
  const tensors = new Map<string, HostTensor>();
  for (const e of paramLayout(model.spec, model.config)) {
    const t = found.tensors.get(e.name)!;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    if (!t.isContiguous) strided++;
    const data = file.readFloat32(t);
    if (data.length !== numel(e.shape)) throw new TorchImportError(where, `${e.name}: read ${data.length} values, expected ${numel(e.shape)}`);
    tensors.set(e.name, { shape: [...e.shape], data });
  }
  return { config: model.config, inferred: model.inferred, at: found.at, stripped: found.stripped, dtypes, strided, tensors };
}

export interface ImportOptions extends ModelRequest {
  input: string;
  /** Model directory to write; not needed with dryRun. */
  out?: string;
  /** Replace model.safetensors and config.json in a non-empty --out. */
  force?: boolean;
  /** Check and convert, write nothing. */
  dryRun?: boolean;
  /**
   * The normalisation the weights were trained with (torch.save files carry none): recorded in
   * config.json. Default: ImageNet's, as the paper's released ImageNet-21k models use.
   */
  normalization?: Normalization;
}

export interface ImportResult extends Omit<ImportedState, 'tensors'> {
  input: string;
  out: string | null;
  numParams: number;
}

function tempDirFor(out: string): string {
  return join(dirname(out), `.${basename(out)}.import-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
}

/**
 * Writes the model through saveModel into a fresh temporary directory beside `out`, then moves it
 * into place: a new or empty `out` appears complete or not at all (one rename); with `force`, an
 * existing directory gets each file replaced by rename (weights first, as saveModel does).
 */
function writeModelDir(out: string, model: Mlp, metadata: Record<string, string>, force: boolean, provenance: Provenance): void {
  out = resolve(out);
  let empty = true;
  if (existsSync(out)) {
    if (!statSync(out).isDirectory()) throw new TorchImportError(out, 'exists and is not a directory');
    empty = readdirSync(out).length === 0;
    if (!empty && !force) throw new TorchImportError(out, 'exists and is not empty (pass --force to replace its model.safetensors and config.json)');
  }
  mkdirSync(dirname(out), { recursive: true });
  const tmp = tempDirFor(out);
  try {
    saveModel(tmp, model, metadata, provenance);
    if (empty) {
      // rename(2) replaces an empty directory in one step.
      renameSync(tmp, out);
    } else {
      for (const f of [MODEL_FILE, CONFIG_FILE]) renameSync(join(tmp, f), join(out, f));
      rmSync(tmp, { recursive: true, force: true });
      fsyncDir(out);
    }
    fsyncDir(dirname(out));
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** npm run import: torch.save file -> checked float32 tensors -> our model directory. */
export function importTorchCheckpoint(opts: ImportOptions): ImportResult {
  if (!opts.dryRun && !opts.out) throw new TorchImportError(opts.input, 'no output directory given');
  const file = TorchFile.open(opts.input);
  let state: ImportedState;
  try {
    state = extractModel(file, opts);
  } finally {
    file.close();
  }
  const { tensors, ...rest } = state;
  const numParams = [...tensors.values()].reduce((s, t) => s + t.data.length, 0);
  const normalization = checkNormalization(opts.normalization ?? imagenetNormalization(state.config.channels), state.config.channels, '--mean/--std');
  const config = { ...state.config, preprocessing: { normalization, evalCrop: DEFAULT_EVAL_CROP } };
  if (!opts.dryRun) {
    const model = new Mlp(config);
    try {
      model.loadStateDict(tensors, opts.input);
      tensors.clear();
      const metadata: Record<string, string> = {
        source: 'torch.save',
        source_file: basename(opts.input),
        source_state_dict: state.at,
        source_dtypes: Object.entries(state.dtypes)
          .map(([d, n]) => `${d}:${n}`)
          .join(','),
      };
      writeModelDir(opts.out!, model, metadata, opts.force ?? false, { importedFrom: resolve(opts.input) });
    } finally {
      model.dispose();
    }
  }
  return { ...rest, config, input: opts.input, out: opts.dryRun ? null : resolve(opts.out!), numParams };
}

/** Input width of a config, for reports. */
export function describeConfig(c: ModelConfig): string {
  const shape: ModelShape = c;
  return `${c.arch}, ${c.channels}x${c.res}x${c.res} input (${inputDim(shape)}), ${c.numClasses} classes`;
}
