import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { readIndex } from '../helpers/read-shards.ts';
import { tempDir } from '../helpers/tmp.ts';

const root = new URL('../../', import.meta.url).pathname;

function shard(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/shard.ts'), ...args], { encoding: 'utf8', cwd: root });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('--help lists every source and option', async (t) => {
  const r = shard(['--help']);
  t.equal(r.code, 0);
  for (const word of [
    'imagefolder',
    'imagenet21k',
    'imagenet',
    'cifar10',
    'cifar100',
    'idx',
    'webdataset',
    'synthetic',
    '--res',
    '--resize',
    '--encoding',
    '--quality',
    '--samples-per-shard',
    '--workers',
    '--seed',
    '--split',
    '--val-fraction',
    '--limit',
  ]) {
    t.match(r.stdout, word);
  }
});

t.test('synthetic end to end: index, summary JSON on stdout', async (t) => {
  const out = join(tempDir(t), 'ds');
  const r = shard(['synthetic', '--count', '50', '--res', '16', '--out', out, '--samples-per-shard', '20', '--workers', '2', '--quiet']);
  t.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { splits: { samples: number; shards: number }[] };
  t.same(
    summary.splits.map((s) => [s.samples, s.shards]),
    [[50, 3]],
  );
  t.equal(readIndex(out)['num_samples'], 50);
  t.match(String(readIndex(out)['created_by'] && JSON.stringify(readIndex(out)['created_by'])), /--count 50/);
});

t.test('usage errors exit 2; missing inputs and unwritable --out exit 1 with the path named, leaving no dataset', async (t) => {
  const dir = tempDir(t);
  const unknownKind = shard(['pictures', dir]);
  t.equal(unknownKind.code, 1);
  t.match(unknownKind.stderr, /unknown source kind "pictures"/);
  const badOption = shard(['synthetic', '--resize', 'stretch']);
  t.equal(badOption.code, 2);
  t.match(badOption.stderr, /--resize: expected one of max-side, center-crop, got stretch/);
  const missing = shard(['imagefolder', join(dir, 'nothing-here'), '--out', join(dir, 'o1')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /nothing-here: image folder does not exist/);
  t.notOk(existsSync(join(dir, 'o1')), 'no output folder for a failed source');
  writeFileSync(join(dir, 'a-file'), 'x');
  const unwritable = shard(['synthetic', '--count', '5', '--out', join(dir, 'a-file', 'sub')]);
  t.equal(unwritable.code, 1);
  t.match(unwritable.stderr, /a-file\/sub: cannot create the output folder/);
  t.same(
    readdirSync(dir).filter((f) => f.endsWith('.json')),
    [],
    'no index anywhere',
  );
});

t.test('range checks of the options are usage errors (exit 2)', async (t) => {
  for (const [args, re] of [
    [['--res', '0'], /--res: must be an integer in 1..4096, got 0/],
    [['--samples-per-shard', '0'], /--samples-per-shard: must be a positive integer, got 0/],
    [['--quality', '101'], /--quality: must be an integer in 1..100, got 101/],
    [['--val-fraction', '1.5'], /--val-fraction: must be in \[0, 1\), got 1.5/],
    [['--channels', '2'], /--channels: must be 1 or 3, got 2/],
    [['--workers', '100000'], /--workers: must be at most \d+ \(4 x this machine's cores\), got 100000/],
    [['--workers', '0'], /--workers: must be a positive integer, got 0/],
  ] as [string[], RegExp][]) {
    const r = shard(['synthetic', '--count', '5', '--out', join(tempDir(t), 'o'), ...args]);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re);
  }
});

t.test('one writer per output folder: a second shard run into it is refused with exit 75', async (t) => {
  const out = join(tempDir(t), 'ds');
  // A live process (this test) holds the folder's lock.
  writeFileSync(`${out}.lock`, JSON.stringify({ pid: process.pid, host: hostname(), command: 'shard synthetic', since: 'now' }));
  const r = shard(['synthetic', '--count', '5', '--res', '8', '--out', out, '--quiet']);
  t.equal(r.code, 75);
  t.match(r.stderr, new RegExp(`ds is being written by another process \\(pid ${process.pid} on`));
  t.notOk(existsSync(join(out, 'index.json')));
});

// Root writes through permission bits, so as root the check runs as "nobody" through setpriv.
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
const asRoot = process.getuid?.() === 0;
// tap's process-info hook wraps spawn to put itself into every child's NODE_OPTIONS, and it
// writes into .tap/, which "nobody" cannot: `env -u` drops it where the CLI starts. HOME and
// TMPDIR (tsx's cache) go where any user can write.
const cli = ['env', '-u', 'NODE_OPTIONS', process.execPath, '--import', 'tsx', join(root, 'src/cli/shard.ts')];
function runCli(args: string[]): SpawnSyncReturns<string> {
  const opts = { encoding: 'utf8' as const, cwd: root, env: { ...process.env, HOME: '/tmp', TMPDIR: '/tmp' } };
  return asRoot
    ? spawnSync(setpriv!, ['--reuid=65534', '--regid=65534', '--clear-groups', ...cli, ...args], opts)
    : spawnSync(cli[0]!, [...cli.slice(1), ...args], opts);
}
/** Why the unprivileged run cannot happen here (false: it can): tried for real with --help. */
function noDropReason(): string | false {
  if (!asRoot) return false;
  if (!setpriv) return 'running as root without setpriv: cannot drop privileges for a permission test';
  const probe = runCli(['--help']);
  if (probe.status === 0) return false;
  // A clone inside a private 0700 folder, say: the unprivileged user cannot load the CLI at all.
  const why = `${probe.stderr ?? ''}`.split('\n').find((l) => /Error|denied|EACCES/.test(l)) ?? `exit ${probe.status}`;
  return `running as root, and the shard CLI does not start as an unprivileged user in this checkout (${why.trim().slice(0, 160)}): cannot drop privileges for a permission test`;
}
const noDrop = noDropReason();

t.test('a read-only output folder is an error naming it (run as an unprivileged user)', { skip: noDrop }, async (t) => {
  // Under /tmp itself (world-traversable), not TMPDIR, which may be a private folder.
  const dir = tempDir(t, 'smlp-ro-', '/tmp');
  chmodSync(dir, 0o755);
  const ro = join(dir, 'ro');
  mkdirSync(ro);
  chmodSync(ro, 0o555);
  t.teardown(() => chmodSync(ro, 0o755));
  const r = runCli(['synthetic', '--count', '5', '--res', '8', '--out', join(ro, 'ds'), '--quiet']);
  t.equal(r.status, 1, r.stderr);
  t.match(r.stderr, /ro\/ds: cannot create the output folder's lock file .*EACCES: not writable/);
  t.notOk(existsSync(join(ro, 'ds')), 'nothing written');
});
