import t from 'tap';
import { braceExpand, expandUrls } from '../../../src/pipeline/webdataset/urls.ts';

t.test('braceExpand follows Python braceexpand', async (t) => {
  const cases: [string, string[]][] = [
    ['plain.tar', ['plain.tar']],
    ['', ['']],
    ['item{1..3}', ['item1', 'item2', 'item3']],
    ['{a..c}', ['a', 'b', 'c']],
    ['index.html{,.backup}', ['index.html', 'index.html.backup']],
    ['python{2.{5..7},3.{2,3}}', ['python2.5', 'python2.6', 'python2.7', 'python3.2', 'python3.3']],
    ['{07..10}', ['07', '08', '09', '10']],
    ['{a..g..2}', ['a', 'c', 'e', 'g']],
    ['{4..1}', ['4', '3', '2', '1']],
    ['{2..-1}', ['2', '1', '0', '-1']],
    ['{0..10..2}', ['0', '2', '4', '6', '8', '10']],
    ['{10..0..3}', ['10', '7', '4', '1']],
    ['{0..10..-3}', ['0', '3', '6', '9']],
    ['{1..3..0}', ['1', '2', '3']],
    ['{5..5}', ['5']],
    ['{0..3}', ['0', '1', '2', '3']],
    ['{0..10}', ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10']],
    ['{-05..2..3}', ['-05', '-02', '001']],
    ['{9..12}', ['9', '10', '11', '12']],
    ['{09..12}', ['09', '10', '11', '12']],
    ['{e..a..2}', ['e', 'c', 'a']],
    ['{Y..b}', ['Y', 'Z', 'a', 'b']],
    ['{C..A}', ['C', 'B', 'A']],
    ['{a,b}{1,2}', ['a1', 'a2', 'b1', 'b2']],
    ['x{a,{b,c}d}y', ['xay', 'xbdy', 'xcdy']],
    ['{a}', ['{a}']],
    ['{}', ['{}']],
    ['{{a,b}}', ['{a}', '{b}']],
    ['a{,}b', ['ab', 'ab']],
    ['{a,,b}', ['a', '', 'b']],
    ['{1..3}{a..b}', ['1a', '1b', '2a', '2b', '3a', '3b']],
    ['{1\\{2,3}', ['1{2', '3']],
    ['\\{1,2\\}', ['{1,2}']],
    ['}{', ['}{']], // depth goes -1 then back to 0: braceexpand accepts it
    ['a\\,b', ['a,b']],
    ['a\\\\{1,2}', ['a\\1', 'a\\2']],
    ['{a..1}', ['{a..1}']],
    ['{1..a}', ['{1..a}']],
  ];
  for (const [pattern, want] of cases) t.strictSame(braceExpand(pattern), want, pattern);
});

t.test('shard patterns with zero padding', async (t) => {
  const urls = braceExpand('train-{000000..000123}.tar');
  t.equal(urls.length, 124);
  t.equal(urls[0], 'train-000000.tar');
  t.equal(urls[9], 'train-000009.tar');
  t.equal(urls[123], 'train-000123.tar');
  t.strictSame(braceExpand('s3/{000..123..40}.tar'), ['s3/000.tar', 's3/040.tar', 's3/080.tar', 's3/120.tar']);
  t.strictSame(braceExpand('http://h/{a,b}/x-{0..1}.tar'), ['http://h/a/x-0.tar', 'http://h/a/x-1.tar', 'http://h/b/x-0.tar', 'http://h/b/x-1.tar']);
});

t.test('unbalanced braces are an error, as in braceexpand', async (t) => {
  for (const p of ['{1{2,3}', 'a}b', '{a,b', 'x{a\\}', '\\{1,2}']) {
    t.throws(() => braceExpand(p), { name: 'UrlError', message: /unbalanced braces/ }, p);
  }
});

t.test('huge expansions are refused instead of exhausting memory', async (t) => {
  t.throws(() => braceExpand('{0..99999999}'), { name: 'UrlError' });
  t.throws(() => braceExpand('{0..999}{0..999}{0..999}'), { name: 'UrlError' });
});

t.test('expandUrls splits on "::" and expands each part in order', async (t) => {
  t.strictSame(expandUrls('a-{0..1}.tar::b.tar::c-{x,y}.tar'), ['a-0.tar', 'a-1.tar', 'b.tar', 'c-x.tar', 'c-y.tar']);
  t.strictSame(expandUrls(['a-{0..1}.tar', 'b::c{1,2}']), ['a-0.tar', 'a-1.tar', 'b', 'c1', 'c2']);
  t.strictSame(expandUrls([]), []);
  t.strictSame(expandUrls('http://host:8080/x.tar'), ['http://host:8080/x.tar'], 'a single ":" is not a separator');
});
