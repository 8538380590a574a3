// Malicious pickles: each would run a command that creates a marker file if loaded by an unsafe
// unpickler (torch.load without weights_only, pickle.load). The importer must refuse every one
// with PickleSecurityError naming the global, leave no output, and the marker must not exist.
// A control run of the same command shows it would indeed create the file.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { PickleSecurityError } from '../../../src/model/torch-import/errors.ts';
import { importTorchCheckpoint } from '../../../src/model/torch-import/import.ts';
import { runImportCli } from '../../../src/cli/import-main.ts';
import { TorchFile } from '../../../src/model/torch-import/torch-load.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { CLI, FIXTURES, P, expected, f32, pk, tensorCall, torchZip } from './helpers.ts';

t.test('control: the payload command really creates its marker', async (t) => {
  const dir = tempDir(t);
  const m = join(dir, 'control');
  execFileSync('sh', ['-c', `touch ${m}`]);
  t.ok(existsSync(m));
});

t.test('committed malicious fixtures are refused and never run', async (t) => {
  const cases = Object.entries(expected.malicious);
  t.ok(cases.length >= 8, `${cases.length} fixtures`);
  for (const [name, { file, global, marker }] of cases) {
    t.test(`${name}: ${global}`, async (t) => {
      const dir = tempDir(t);
      rmSync(marker, { force: true });
      const path = `${FIXTURES}${file}`;
      t.match(readFileSync(path).subarray(0, 2).toString('latin1'), 'PK', 'a zip like torch.save writes');
      t.throws(() => TorchFile.open(path), { name: 'PickleSecurityError', global }, 'TorchFile.open refuses');
      const out = join(dir, 'out');
      t.throws(() => importTorchCheckpoint({ input: path, out }), PickleSecurityError, 'importTorchCheckpoint refuses');
      t.notOk(existsSync(out), 'no output directory');
      const err: string[] = [];
      const code = await runImportCli([path, '--out', out], { stdout: () => {}, stderr: (s) => err.push(s) });
      t.equal(code, 1, 'the CLI exits 1');
      t.match(err.join(''), `refusing global "${global}"`);
      t.match(err.join(''), 'nothing in it was run');
      t.notOk(existsSync(marker), `marker ${marker} does not exist: nothing ran`);
    });
  }
});

// Payloads built here, pointing at a fresh marker, in both the GLOBAL and the STACK_GLOBAL form,
// each after a valid tensor so the refusal happens mid-file.
const PAYLOADS: [string, string, (m: string) => Buffer][] = [
  ['os', 'system', (m) => pk(P.str(`touch ${m}`), P.tuple1)],
  ['posix', 'system', (m) => pk(P.str(`touch ${m}`), P.tuple1)],
  ['nt', 'system', (m) => pk(P.str(`touch ${m}`), P.tuple1)],
  ['os', 'popen', (m) => pk(P.str(`touch ${m}`), P.tuple1)],
  ['builtins', 'eval', (m) => pk(P.str(`__import__('os').system('touch ${m}')`), P.tuple1)],
  ['builtins', 'exec', (m) => pk(P.str(`import os; os.system('touch ${m}')`), P.tuple1)],
  ['__builtin__', 'eval', (m) => pk(P.str(`__import__('os').system('touch ${m}')`), P.tuple1)],
  ['builtins', 'getattr', () => pk(P.str('os'), P.str('system'), P.tuple2)],
  ['builtins', '__import__', () => pk(P.str('os'), P.tuple1)],
  ['subprocess', 'Popen', (m) => pk(P.emptyList, P.mark, P.str('touch'), P.str(m), P.appends, P.tuple1)],
  ['subprocess', 'check_output', (m) => pk(P.emptyList, P.mark, P.str('touch'), P.str(m), P.appends, P.tuple1)],
  ['pty', 'spawn', (m) => pk(P.str(`touch ${m}`), P.tuple1)],
  ['runpy', '_run_code', (m) => pk(P.str(`import os; os.system('touch ${m}')`), P.emptyDict, P.tuple2)],
  ['torch', 'load', (m) => pk(P.str(m), P.tuple1)],
  ['torch.storage', '_load_from_bytes', (m) => pk(P.str(m), P.tuple1)],
  ['torch.serialization', 'load', (m) => pk(P.str(m), P.tuple1)],
  ['functools', 'partial', () => pk(P.emptyTuple)],
  ['copyreg', '_reconstructor', () => pk(P.emptyTuple)],
  ['numpy.core.multiarray', '_reconstruct', () => pk(P.emptyTuple)],
  ['__main__', 'Evil', () => pk(P.emptyTuple)],
  ['torch.nn.modules.linear', 'Linear', () => pk(P.emptyTuple)],
];

t.test('generated payloads, GLOBAL and STACK_GLOBAL, after valid tensors', async (t) => {
  const dir = tempDir(t);
  let i = 0;
  for (const [mod, name, args] of PAYLOADS) {
    for (const form of ['GLOBAL', 'STACK_GLOBAL'] as const) {
      const marker = join(dir, `pwned-${i++}`);
      const callee = form === 'GLOBAL' ? P.global(mod, name) : pk(P.shortStr(mod), P.shortStr(name), P.stackGlobal);
      const pkl = pk(
        P.proto(form === 'GLOBAL' ? 2 : 4),
        P.emptyDict,
        P.str('linear_in.weight'),
        tensorCall('0', 4, [2, 2], [2, 1]),
        P.setitem,
        P.str('payload'),
        callee,
        args(marker),
        P.reduce,
        P.setitem,
        P.stop,
      );
      const path = join(dir, `mal-${i}.pt`);
      writeFileSync(path, torchZip(pkl, { '0': f32([1, 2, 3, 4]) }));
      const q = `${mod}.${name}`;
      t.throws(() => TorchFile.open(path), { name: 'PickleSecurityError', global: q }, `${form} ${q} refused`);
      t.throws(() => importTorchCheckpoint({ input: path, out: join(dir, `out-${i}`) }), { name: 'PickleSecurityError', global: q });
      t.notOk(existsSync(marker), `${form} ${q}: marker absent`);
      t.notOk(existsSync(join(dir, `out-${i}`)), `${form} ${q}: nothing written`);
    }
  }
});

t.test('the real CLI entry point refuses a malicious file (exit 1), marker absent', async (t) => {
  const { file, global, marker } = expected.malicious['torch_save']!;
  rmSync(marker, { force: true });
  const dir = tempDir(t);
  let code = 0;
  let stderr = '';
  try {
    execFileSync(process.execPath, ['--import', 'tsx', CLI, `${FIXTURES}${file}`, '--out', join(dir, 'o')], { stdio: 'pipe', timeout: 180_000 });
  } catch (e) {
    const err = e as { status: number; stderr: Buffer };
    code = err.status;
    stderr = err.stderr.toString();
  }
  t.equal(code, 1);
  t.match(stderr, global);
  t.notOk(existsSync(marker));
  t.notOk(existsSync(join(dir, 'o')));
});
