// The zip reader, byte by byte: torch.save's own archives, stored and deflated entries, zip64
// records, comments, and every kind of damage it must refuse rather than misread.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import t from 'tap';
import { ZipError } from '../../../src/model/torch-import/errors.ts';
import { ZipArchive, bufferSource, crc32, fileSource } from '../../../src/model/torch-import/zip.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { FIXTURES, makeZip } from './helpers.ts';

const open = (b: Buffer): ZipArchive => ZipArchive.open(bufferSource(b), 'test.zip');

t.test('a real torch.save archive: names, sizes, 64-byte aligned data', async (t) => {
  const buf = readFileSync(`${FIXTURES}plain.pt`);
  const zip = open(buf);
  const names = [...zip.entries.keys()];
  t.ok(names.includes('plain/data.pkl') && names.includes('plain/version'));
  const data = names.filter((n) => n.startsWith('plain/data/'));
  t.equal(data.length, 10, 'one storage per tensor');
  for (const n of data) {
    const e = zip.entry(n);
    t.equal(e.method, 0, `${n} is stored`);
    t.equal(zip.dataOffset(e) % 64, 0, `${n} data is 64-byte aligned (local header padding honoured)`);
    t.equal(zip.read(n).length, e.size);
  }
  t.equal(zip.read('plain/version').toString(), '3\n');
});

t.test('stored, deflated, zip64 and commented archives read the same bytes', async (t) => {
  const a = randomBytes(3000);
  const b = Buffer.from('hello '.repeat(500));
  const entries = [
    { name: 'x/a.bin', data: a },
    { name: 'x/b.txt', data: b, deflate: true },
    { name: 'x/empty', data: Buffer.alloc(0) },
    { name: 'x/é', data: Buffer.from('u'), pad: 17 },
  ];
  const variants: [string, Buffer][] = [
    ['plain', makeZip(entries)],
    ['zip64', makeZip(entries, { zip64: true })],
    ['comment with a fake end record inside', makeZip(entries, { comment: Buffer.concat([Buffer.from('PK\x05\x06'), Buffer.alloc(30, 1)]) })],
  ];
  for (const [what, buf] of variants) {
    const zip = open(buf);
    t.same([...zip.entries.keys()], ['x/a.bin', 'x/b.txt', 'x/empty', 'x/é'], `${what}: names`);
    t.ok(zip.read('x/a.bin').equals(a), `${what}: stored entry`);
    t.ok(zip.read('x/b.txt').equals(b), `${what}: deflated entry`);
    t.equal(zip.entry('x/b.txt').method, 8);
    t.ok(zip.entry('x/b.txt').compressedSize < b.length, `${what}: deflate did compress`);
    t.equal(zip.read('x/empty').length, 0);
    t.equal(zip.read('x/é').toString(), 'u', `${what}: UTF-8 name, padded local header`);
  }
});

t.test('fileSource reads the same as bufferSource, and Python zipfile output parses', async (t) => {
  const dir = tempDir(t);
  const buf = makeZip([{ name: 'f', data: randomBytes(100_000), deflate: true }]);
  const path = join(dir, 'a.zip');
  writeFileSync(path, buf);
  const src = fileSource(path);
  const zip = ZipArchive.open(src, path);
  t.ok(zip.read('f').equals(open(buf).read('f')));
  t.throws(() => src.read(buf.length - 2, 4), RangeError);
  zip.close();
  zip.close();
  // deflated.pt is plain.pt re-packed by Python's zipfile with ZIP_DEFLATED.
  const py = open(readFileSync(`${FIXTURES}deflated.pt`));
  const ref = open(readFileSync(`${FIXTURES}plain.pt`));
  for (const n of ref.entries.keys()) {
    t.equal(py.entry(n).method, 8);
    t.ok(py.read(n).equals(ref.read(n)), `${n} inflates to torch.save's bytes`);
  }
});

t.test('crc32 matches zlib', async (t) => {
  const native = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
  t.equal(crc32(Buffer.from('123456789')), 0xcbf43926, 'the standard check value');
  t.equal(crc32(Buffer.alloc(0)), 0);
  if (native) {
    const d = randomBytes(10_000);
    t.equal(crc32(d), native(d) >>> 0);
  }
});

t.test('damaged or unsupported archives are refused with ZipError', async (t) => {
  const good = makeZip([
    { name: 'a', data: Buffer.from('abcdef') },
    { name: 'b', data: Buffer.from('x'.repeat(100)), deflate: true },
  ]);
  const expectZipError = (what: string, fn: () => unknown, re: RegExp): void => {
    t.throws(fn, ZipError, what);
    t.throws(fn, re, what);
  };
  expectZipError('too short', () => open(Buffer.from('PK')), /not a zip archive \(2 bytes\)/);
  expectZipError('not a zip', () => open(Buffer.alloc(100, 7)), /no end-of-central-directory record/);
  expectZipError('truncated', () => open(good.subarray(0, good.length - 10)), /no end-of-central-directory/);
  const chopped = Buffer.concat([good.subarray(0, 20), good.subarray(good.length - 22)]);
  expectZipError('directory points past its end record', () => open(chopped), /overlaps its end record/);

  const flipped = Buffer.from(good);
  flipped[30 + 1 + 2] ^= 0xff; // inside entry a's data
  expectZipError('CRC mismatch', () => open(flipped).read('a'), /CRC-32 mismatch/);
  expectZipError('bad CRC in the directory', () => open(makeZip([{ name: 'a', data: Buffer.from('abc'), crc: 1 }])).read('a'), /CRC-32 mismatch/);
  expectZipError('encrypted', () => open(makeZip([{ name: 'a', data: Buffer.from('abc'), flags: 1 }])).read('a'), /encrypted/);
  expectZipError('bzip2', () => open(makeZip([{ name: 'a', data: Buffer.from('abc'), method: 12 }])).read('a'), /compression method 12 is not supported/);
  expectZipError(
    'duplicate names',
    () =>
      open(
        makeZip([
          { name: 'a', data: Buffer.from('1') },
          { name: 'a', data: Buffer.from('2') },
        ]),
      ),
    /holds this name twice/,
  );
  expectZipError('missing entry', () => open(good).read('zzz'), /no entry "zzz"/);

  const badLocal = Buffer.from(good);
  badLocal.writeUInt32LE(0x12345678, 0);
  expectZipError('local header signature', () => open(badLocal).read('a'), /no local header at 0/);
  const renamed = Buffer.from(good);
  renamed[30] = 'z'.charCodeAt(0); // the local header's copy of the name
  expectZipError('local name differs from the directory', () => open(renamed).read('a'), /local header names "z"/);

  // A deflate stream that inflates to more than the directory says: stopped at the declared size.
  const bomb = makeZip([{ name: 'a', data: Buffer.alloc(1 << 20), deflate: true }]);
  const cdAt = bomb.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  bomb.writeUInt32LE(1000, cdAt + 24); // declared size
  expectZipError('inflates past the declared size', () => open(bomb).read('a'), /cannot inflate|inflated to/);
  const corrupt = makeZip([{ name: 'a', data: Buffer.from('hello hello hello'), deflate: true }]);
  corrupt[30 + 1] ^= 0xff;
  expectZipError('corrupt deflate data', () => open(corrupt).read('a'), /cannot inflate|CRC-32 mismatch|inflated to/);

  const many = Buffer.from(good);
  many.writeUInt16LE(60000, many.length - 22 + 10);
  expectZipError('entry count too large for the directory', () => open(many), /cannot fit/);
  const z64 = makeZip([{ name: 'a', data: Buffer.from('abc') }], { zip64: true });
  const noLocator = Buffer.from(z64);
  noLocator.writeUInt32LE(0, z64.length - 22 - 20);
  expectZipError('zip64 without locator', () => open(noLocator), /no zip64 locator/);
});
