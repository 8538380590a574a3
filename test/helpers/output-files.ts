// Every file of a shard job's output folder (hidden ones included), for byte-for-byte
// comparisons of two outputs: md5 of each file, the indexes' recorded command blanked (a
// merge records its own command line, the one thing allowed to differ).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function outputFiles(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const f of readdirSync(join(dir, rel)).sort()) {
      const path = join(rel, f);
      if (statSync(join(dir, path)).isDirectory()) {
        out[`${path}/`] = 'folder';
        walk(path);
        continue;
      }
      let bytes: Buffer = readFileSync(join(dir, path));
      if (/\.json$/.test(f) && !rel) {
        const text = bytes.toString('utf8');
        const blanked = text.replace(/^( {4}"command": )".*"$/m, '$1""');
        if (blanked === text && text.includes('"created_by"')) throw new Error(`${path}: no created_by.command line to blank`);
        bytes = Buffer.from(blanked);
      }
      out[path] = createHash('md5').update(bytes).digest('hex');
    }
  };
  walk('');
  return out;
}
