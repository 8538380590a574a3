import t from 'tap';
import { BLOCK, checkedHeaderSize, DEFAULT_MTIME, RECORD, decodeHeader, encodeHeader, paddedSize } from '../../../src/pipeline/webdataset/tar-header.ts';

const ascii = (b: Uint8Array, start: number, len: number): string => Buffer.from(b.subarray(start, start + len)).toString('latin1');

function checksumOf(h: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum;
}

t.test('constants and padding', async (t) => {
  t.equal(BLOCK, 512);
  t.equal(RECORD, 10240);
  t.equal(DEFAULT_MTIME, 0);
  t.strictSame([0, 1, 511, 512, 513, 1024, 1025].map(paddedSize), [0, 512, 512, 512, 1024, 1024, 1536]);
});

t.test('encodeHeader writes every ustar field as tarfile does', async (t) => {
  const h = encodeHeader({ name: 'train/000123.cls', size: 1234, mtime: 1700000000 });
  t.equal(h.length, 512);
  t.equal(ascii(h, 0, 17), 'train/000123.cls\0', 'name, NUL padded');
  t.ok(h.subarray(16, 100).every((b) => b === 0));
  t.equal(ascii(h, 100, 8), '0000444\0', 'default mode 0444, 7 octal digits + NUL');
  t.equal(ascii(h, 108, 8), '0000000\0', 'uid 0');
  t.equal(ascii(h, 116, 8), '0000000\0', 'gid 0');
  t.equal(ascii(h, 124, 12), '00000002322\0', 'size 1234 in 11 octal digits');
  t.equal(ascii(h, 136, 12), (1700000000).toString(8).padStart(11, '0') + '\0', 'mtime');
  t.equal(ascii(h, 156, 1), '0', 'typeflag regular file');
  t.ok(
    h.subarray(157, 257).every((b) => b === 0),
    'empty linkname',
  );
  t.equal(ascii(h, 257, 8), 'ustar\x0000', 'POSIX magic + version');
  t.equal(ascii(h, 265, 32), 'bigdata'.padEnd(32, '\0'), 'uname');
  t.equal(ascii(h, 297, 32), 'bigdata'.padEnd(32, '\0'), 'gname');
  t.ok(
    h.subarray(329, 512).every((b) => b === 0),
    'devmajor/devminor/prefix/padding are NUL',
  );
  const sum = checksumOf(h);
  t.equal(ascii(h, 148, 8), sum.toString(8).padStart(6, '0') + '\0 ', 'checksum "%06o\\0 "');
});

t.test('encodeHeader honours overrides and writes into a buffer at an offset', async (t) => {
  const out = new Uint8Array(2048).fill(0xaa);
  encodeHeader({ name: 'x.bin', size: 0, mode: 0o100644, uid: 1000, gid: 100, uname: 'me', gname: 'us', typeflag: '5', mtime: 7 }, out, 1024);
  t.ok(
    out.subarray(0, 1024).every((b) => b === 0xaa),
    'bytes before untouched',
  );
  t.ok(
    out.subarray(1536).every((b) => b === 0xaa),
    'bytes after untouched',
  );
  const h = out.subarray(1024, 1536);
  t.equal(ascii(h, 100, 8), '0000644\0', 'mode masked to 0o7777 like tarfile');
  t.equal(ascii(h, 108, 8), '0001750\0');
  t.equal(ascii(h, 156, 1), '5');
  t.equal(ascii(h, 265, 3), 'me\0');
  const d = decodeHeader(out, 1024);
  t.match(d, { name: 'x.bin', size: 0, mode: 0o644, uid: 1000, gid: 100, uname: 'me', gname: 'us', typeflag: '5', mtime: 7, magic: 'ustar' });
});

t.test('encodeHeader refuses what would need a PAX header', async (t) => {
  t.throws(() => encodeHeader({ name: 'ü.txt', size: 1 }), { name: 'TarFormatError', message: /ASCII/ });
  t.throws(() => encodeHeader({ name: 'a'.repeat(101), size: 1 }), { name: 'TarFormatError', message: /longer than 100/ });
  t.doesNotThrow(() => encodeHeader({ name: 'a'.repeat(100), size: 1 }), 'exactly 100 bytes fits');
  t.throws(() => encodeHeader({ name: 'a', size: 8 ** 11 }), { name: 'TarFormatError', message: /size/ });
  t.throws(() => encodeHeader({ name: 'a', size: 1, mtime: 1.5 }), { name: 'TarFormatError', message: /mtime/ });
  t.throws(() => encodeHeader({ name: 'a', size: -1 }), { name: 'TarFormatError' });
  t.throws(() => encodeHeader({ name: 'a', size: 1 }, new Uint8Array(100)), RangeError);
});

t.test('decodeHeader round-trips and reports the end of the archive', async (t) => {
  const h = encodeHeader({ name: 'dir/k.seg.png', size: 8 ** 11 - 1, mtime: 8 ** 11 - 1 });
  const d = decodeHeader(h, 0);
  t.strictSame(d, {
    name: 'dir/k.seg.png',
    size: 8 ** 11 - 1,
    typeflag: '0',
    mtime: 8 ** 11 - 1,
    mode: 0o444,
    linkname: '',
    prefix: '',
    uid: 0,
    gid: 0,
    uname: 'bigdata',
    gname: 'bigdata',
    magic: 'ustar',
  });
  t.equal(decodeHeader(new Uint8Array(1024), 512), null, 'all-zero block');
});

t.test('decodeHeader verifies the checksum and names the url and offset', async (t) => {
  const buf = new Uint8Array(1536);
  encodeHeader({ name: 'a.cls', size: 1 }, buf, 1024);
  buf[1024 + 5] = 0x41; // corrupt the name
  t.throws(() => decodeHeader(buf, 1024, { url: 'shard-7.tar', base: 4096 }), {
    name: 'TarFormatError',
    url: 'shard-7.tar',
    offset: 5120,
    message: /checksum.*shard-7\.tar.*offset 5120/,
  });
});

t.test('decodeHeader accepts a signed-byte checksum, as tar does', async (t) => {
  const h = encodeHeader({ name: 'a.cls', size: 1, uname: 'x' });
  h[265 + 20] = 0xff; // a high byte in uname: signed and unsigned sums now differ
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    signed += c > 127 ? c - 256 : c;
  }
  Buffer.from(signed.toString(8).padStart(6, '0') + '\0 ', 'latin1').copy(h, 148);
  t.equal(decodeHeader(h, 0)?.name, 'a.cls');
  Buffer.from((signed + 1).toString(8).padStart(6, '0') + '\0 ', 'latin1').copy(h, 148);
  t.throws(() => decodeHeader(h, 0), { name: 'TarFormatError' });
});

function rechecksum(h: Uint8Array): void {
  Buffer.from(checksumOf(h).toString(8).padStart(6, '0') + '\0 ', 'latin1').copy(h, 148);
}

t.test('decodeHeader reads GNU base-256 sizes and space-padded octal', async (t) => {
  const h = encodeHeader({ name: 'big.bin', size: 0 });
  const size = 2 ** 40 + 5; // beyond 11 octal digits
  h[124] = 0x80;
  h.fill(0, 125, 136);
  let v = size;
  for (let i = 135; i > 124; i--) {
    h[i] = v % 256;
    v = Math.floor(v / 256);
  }
  Buffer.from('   644 \0', 'latin1').copy(h, 100);
  rechecksum(h);
  const d = decodeHeader(h, 0)!;
  t.equal(d.size, size);
  t.equal(d.mode, 0o644);
  Buffer.from('12x4567\0', 'latin1').copy(h, 100);
  rechecksum(h);
  t.throws(() => decodeHeader(h, 0, { url: 'u' }), { name: 'TarFormatError', message: /invalid tar mode field/ });
});

t.test('decodeHeader: prefix only for POSIX magic, v7 headers have no owner names', async (t) => {
  const h = encodeHeader({ name: 'name.txt', size: 0 });
  Buffer.from('some/prefix', 'latin1').copy(h, 345);
  rechecksum(h);
  t.match(decodeHeader(h, 0), { name: 'name.txt', prefix: 'some/prefix', magic: 'ustar' });
  Buffer.from('ustar  \0', 'latin1').copy(h, 257);
  rechecksum(h);
  t.match(decodeHeader(h, 0), { prefix: '', magic: 'gnu' }, 'GNU headers use those bytes for other fields');
  h.fill(0, 257, 512);
  rechecksum(h);
  t.match(decodeHeader(h, 0), { prefix: '', uname: '', magic: 'v7' });
});

t.test('decodeHeader decodes UTF-8 names and refuses short blocks', async (t) => {
  const h = encodeHeader({ name: 'xx.txt', size: 0 });
  const name = Buffer.from('ködé.txt', 'utf8');
  h.fill(0, 0, 100);
  name.copy(h, 0);
  rechecksum(h);
  t.equal(decodeHeader(h, 0)?.name, 'ködé.txt');
  t.throws(() => decodeHeader(h.subarray(0, 300), 0, { url: 'u' }), { name: 'TarFormatError', message: /truncated/ });
});

t.test('checkedHeaderSize: the size of a valid header, -1 where decodeHeader finds no valid one', async (t) => {
  const buf = new Uint8Array(4 * BLOCK);
  encodeHeader({ name: 'k.npy', size: 896 }, buf, BLOCK);
  t.equal(checkedHeaderSize(buf, BLOCK), 896);
  t.equal(checkedHeaderSize(buf, 0), -1, 'an all-zero block');
  t.equal(checkedHeaderSize(buf, 3 * BLOCK + 1), -1, 'a short block');
  t.equal(checkedHeaderSize(buf, -BLOCK), -1);
  const h = buf.subarray(BLOCK, 2 * BLOCK);
  h[0] = 0x6a; // "j.npy": the stored checksum is now one short
  t.equal(checkedHeaderSize(buf, BLOCK), -1, 'a wrong checksum');
  t.throws(() => decodeHeader(buf, BLOCK), { name: 'TarFormatError', message: /checksum/ });
  rechecksum(h);
  t.equal(checkedHeaderSize(buf, BLOCK), 896);
  Buffer.from('0000000x000\0', 'latin1').copy(h, 124);
  rechecksum(h);
  t.throws(() => checkedHeaderSize(buf, BLOCK), { name: 'TarFormatError', message: /invalid tar size field/ });
  // A signed-sum checksum: valid for tar (decodeHeader), left to decodeHeader here.
  const s = encodeHeader({ name: 'a.cls', size: 1, uname: 'x' });
  s[265 + 20] = 0xff;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : s[i]!;
    signed += c > 127 ? c - 256 : c;
  }
  Buffer.from(`${signed.toString(8).padStart(6, '0')}\0 `, 'latin1').copy(s, 148);
  t.equal(decodeHeader(s, 0)?.size, 1);
  t.equal(checkedHeaderSize(s, 0), -1);
});
