// A real S3-compatible server (s3rver) on 127.0.0.1 for the object-storage tests, with every
// request it receives recorded (so a test can count the GETs of a shard). s3rver checks the access
// key id of a V4-signed request but not its signature; the credential tests rely on the former.
import type { Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { S3_CONFIG_VARS } from '../../src/shared/s3.ts';

export interface S3Request {
  method: string;
  /** Path-style: /bucket/key (with the query string). */
  url: string;
  range: string | undefined;
}

export interface S3TestServer {
  endpoint: string;
  requests: S3Request[];
  /** Calls `fn` after the server has answered each request (the object is stored when the status is 2xx). */
  onResponse(fn: (q: S3Request, status: number) => void): void;
  /** Environment that points the SDK at this server with valid credentials (and nothing from the host). */
  env: Record<string, string>;
  /** GET requests of one object (path-style /bucket/key, query ignored). */
  gets(bucket: string, key: string): S3Request[];
  close(): Promise<void>;
}

/** Variables a child process or this one should not inherit from the host when talking to the test server. */
export const AWS_VARS = [...S3_CONFIG_VARS, 'AWS_EC2_METADATA_DISABLED', 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'];

export async function startS3Server(t: { teardown(fn: () => unknown): void }, buckets: string[] = ['bkt']): Promise<S3TestServer> {
  const directory = mkdtempSync(join(tmpdir(), 'smlp-s3-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  });
  const addr = await server.run();
  const requests: S3Request[] = [];
  const http = (server as unknown as { httpServer: Server }).httpServer;
  const answered: ((q: S3Request, status: number) => void)[] = [];
  http.on('request', (req, res) => {
    const range = req.headers['range'];
    const q: S3Request = { method: req.method ?? '', url: req.url ?? '', range: typeof range === 'string' ? range : undefined };
    requests.push(q);
    res.on('finish', () => {
      for (const fn of answered) fn(q, res.statusCode);
    });
  });
  const endpoint = `http://127.0.0.1:${addr.port}`;
  const env: Record<string, string> = {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    // Nothing from the host's ~/.aws, and no instance-metadata probe (a 1 s timeout each).
    AWS_CONFIG_FILE: join(directory, 'no-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(directory, 'no-credentials'),
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await server.close();
    rmSync(directory, { recursive: true, force: true });
  };
  t.teardown(close);
  return {
    endpoint,
    requests,
    onResponse: (fn) => answered.push(fn),
    env,
    gets: (bucket, key) => requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === `/${bucket}/${key}`),
    close,
  };
}

/** Points this process's SDK at `env` (the module keys its clients on these variables) until teardown. */
export function useS3Env(t: { teardown(fn: () => unknown): void }, env: Record<string, string | undefined>): void {
  const saved = new Map(AWS_VARS.map((k) => [k, process.env[k]]));
  for (const k of AWS_VARS) delete process.env[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) process.env[k] = v;
  t.teardown(() => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

/** A child's environment: the host's, minus any AWS settings, plus `env`. */
export function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const k of AWS_VARS) delete out[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}
