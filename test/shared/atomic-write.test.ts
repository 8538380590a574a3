// Atomic writes: a file is replaced whole, and a create-if-absent has exactly one winner among
// concurrent writers; neither leaves a temporary behind, on success or failure.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { atomicCreateFileAsync, atomicWriteFileAsync } from '../../src/shared/atomic-write.ts';
import { tempDir } from '../helpers/tmp.ts';

t.test('atomicWriteFileAsync replaces the file whole and leaves nothing else', async (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'state.json');
  await atomicWriteFileAsync(f, 'first');
  await atomicWriteFileAsync(f, Buffer.from('second'));
  t.equal(readFileSync(f, 'utf8'), 'second');
  t.same(readdirSync(dir), ['state.json']);
});

t.test('atomicCreateFileAsync: of 20 concurrent creators exactly one wins, and its content stays', async (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'job.json');
  const won = await Promise.all(Array.from({ length: 20 }, (_, i) => atomicCreateFileAsync(f, `writer ${i}`)));
  t.equal(won.filter(Boolean).length, 1, 'one winner');
  t.equal(readFileSync(f, 'utf8'), `writer ${won.indexOf(true)}`, "the winner's content");
  t.equal(await atomicCreateFileAsync(f, 'late'), false, 'an existing file is never replaced');
  t.equal(readFileSync(f, 'utf8'), `writer ${won.indexOf(true)}`);
  t.same(readdirSync(dir), ['job.json'], 'no temporaries left');
});

t.test('atomicCreateFileAsync in a missing folder throws the file-system error', async (t) => {
  const dir = tempDir(t);
  await t.rejects(atomicCreateFileAsync(join(dir, 'missing', 'x.json'), 'x'), { code: 'ENOENT' });
  t.same(readdirSync(dir), []);
});
