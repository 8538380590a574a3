// Shared by the S3 command tests: a real S3-compatible server on 127.0.0.1 holding the shard
// job's output (a train and a val set made locally, uploaded file by file with the object-storage
// module), and the loader command run as a child process against it.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { uploadFile } from '../../src/shared/s3.ts';
import { childEnv, type S3TestServer, startS3Server, useS3Env } from '../helpers/s3-server.ts';
import { tempDir } from '../helpers/tmp.ts';
import { makeShards } from './helpers.ts';

export interface S3Dataset {
  s3: S3TestServer;
  root: string;
  /** Local index.json files of the two sets (uploaded to s3://bkt/ds/train/ and s3://bkt/ds/val/). */
  TRAIN: string;
  VAL: string;
  /** The training set's shard file names. */
  TARS: string[];
  /** GETs of the training shards so far. */
  tarGets(): number;
  loaderCli(args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

const repo = new URL('../../', import.meta.url).pathname;

export const dumpArgs = (data: string, out: string): string[] => [
  'dump',
  '--data',
  data,
  '--batches',
  '3',
  '--batch-size',
  '16',
  '--out',
  out,
  '--workers',
  '1',
];

export async function s3Dataset(t: { teardown(fn: () => unknown): void }): Promise<S3Dataset> {
  const root = tempDir(t);
  const s3 = await startS3Server(t);
  useS3Env(t, s3.env);
  const TRAIN = await makeShards(join(root, 'train'), { count: 96, numClasses: 4, res: 8, seed: 1 });
  const VAL = await makeShards(join(root, 'val'), { count: 48, numClasses: 4, res: 8, seed: 7 });
  const uploadDir = async (dir: string, prefix: string): Promise<string[]> => {
    const names = readdirSync(dir).filter((n) => statSync(join(dir, n)).isFile());
    for (const n of names) await uploadFile(join(dir, n), `${prefix}/${n}`);
    return names;
  };
  const trainFiles = await uploadDir(join(root, 'train'), 's3://bkt/ds/train');
  await uploadDir(join(root, 'val'), 's3://bkt/ds/val');
  const TARS = trainFiles.filter((n) => n.endsWith('.tar'));
  // Asynchronously: the S3 server runs in this process, a blocking spawn would starve it.
  const loaderCli: S3Dataset['loaderCli'] = (args, env) =>
    new Promise((resolve, reject) => {
      const p = spawn(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/loader.ts'), ...args], {
        cwd: repo,
        env: childEnv({ ...s3.env, ...env }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      p.on('error', reject);
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  return { s3, root, TRAIN, VAL, TARS, tarGets: () => TARS.reduce((s, n) => s + s3.gets('bkt', `ds/train/${n}`).length, 0), loaderCli };
}
