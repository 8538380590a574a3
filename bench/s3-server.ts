// A local S3-compatible server (s3rver) for the S3 benchmarks, in its own process: in the
// benchmark's process it would share the event loop and CPU time being measured. Points this
// process's AWS SDK (and children that inherit its environment) at it.
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';

export interface BenchS3Server {
  child: ChildProcess;
  endpoint: string;
}

export async function startBenchS3Server(dir: string, bucket = 'bench'): Promise<BenchS3Server> {
  const s3rverPath = createRequire(import.meta.url).resolve('s3rver');
  const code = `const S3rver = require(${JSON.stringify(s3rverPath)});
new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: ${JSON.stringify(dir)}, configureBuckets: [{ name: ${JSON.stringify(bucket)}, configs: [] }] })
  .run().then((a) => console.log(a.port));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').once('data', (d: string) => resolve(Number(d.trim())));
    child.once('exit', (c) => reject(new Error(`s3rver exited with ${c}`)));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  });
  delete process.env['AWS_ENDPOINT_URL_S3'];
  delete process.env['AWS_PROFILE'];
  return { child, endpoint };
}
