import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
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
  for (const word of ['imagefolder', 'imagenet21k', 'imagenet', 'cifar10', 'cifar100', 'idx', 'webdataset', 'synthetic', '--res', '--resize', '--encoding', '--quality', '--samples-per-shard', '--workers', '--seed', '--split', '--val-fraction', '--limit']) {
    t.match(r.stdout, word);
  }
});

t.test('synthetic end to end: index, summary JSON on stdout', async (t) => {
  const out = join(tempDir(t), 'ds');
  const r = shard(['synthetic', '--count', '50', '--res', '16', '--out', out, '--samples-per-shard', '20', '--workers', '2', '--quiet']);
  t.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { splits: { samples: number; shards: number }[] };
  t.same(summary.splits.map((s) => [s.samples, s.shards]), [[50, 3]]);
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
  t.match(badOption.stderr, /--resize must be one of max-side, center-crop/);
  const missing = shard(['imagefolder', join(dir, 'nothing-here'), '--out', join(dir, 'o1')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /nothing-here: image folder does not exist/);
  t.notOk(existsSync(join(dir, 'o1')), 'no output folder for a failed source');
  writeFileSync(join(dir, 'a-file'), 'x');
  const unwritable = shard(['synthetic', '--count', '5', '--out', join(dir, 'a-file', 'sub')]);
  t.equal(unwritable.code, 1);
  t.match(unwritable.stderr, /a-file\/sub: cannot create the output folder/);
  if (process.getuid?.() !== 0) {
    const ro = join(dir, 'ro');
    writeFileSync(join(dir, 'placeholder'), '');
    chmodSync(dir, 0o555);
    t.teardown(() => chmodSync(dir, 0o755));
    t.not(shard(['synthetic', '--count', '5', '--out', ro]).code, 0);
  }
  t.same(readdirSync(dir).filter((f) => f.endsWith('.json')), [], 'no index anywhere');
});
