// Served frames vs the in-process ring: frames/s and GB/s of `loader serve` over ipc:// and
// tcp:// loopback to a Node consumer and to the Python consumer (examples/torch-ddp/client.py),
// against an in-process loader with the same frames, batch size and threads, measured in the
// same run. Cases are interleaved round by round, since the machine is shared; every case
// skips its first frames (thread start-up, page cache) before timing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Loader } from '../src/pipeline/loader/loader.ts';
import { maxFrameBytes, writeFrameHeader } from '../src/pipeline/ring/frame.ts';
import { ServeClient } from '../src/pipeline/serve/client.ts';
import { FrameServer, type FrameSource } from '../src/pipeline/serve/server.ts';
import { resolveRank } from '../src/shared/launcher-env.ts';
import { syntheticShards } from './synthetic-shards.ts';

const { values: v } = parseArgs({
  options: {
    data: { type: 'string' },
    'batch-size': { type: 'string', default: '16384' },
    res: { type: 'string', default: '64' },
    images: { type: 'string', default: '32768' },
    workers: { type: 'string', default: String(availableParallelism()) },
    seconds: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '2' },
    window: { type: 'string', default: '2' },
    prefetch: { type: 'string', default: '2' },
    cases: { type: 'string', default: 'ring,ipc-node,tcp-node,ipc-python,tcp-python' },
    'no-hugetlb': { type: 'boolean' },
    consume: { type: 'string' },
    'serve-memory': { type: 'string' },
    rank: { type: 'string' },
    world: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write(`npm run bench -- serve [--data <index.json>] [--batch-size 16384] [--res 64] [--images 32768] [--workers N]
  [--seconds 6] [--warmup 2] [--rounds 2] [--window 2] [--prefetch 2] [--rank R --world W]
  [--cases ring,ipc-node,tcp-node,ipc-python,tcp-python] [--no-hugetlb]
Cases ending in -mem serve frames prepared once in memory (no loader threads): the transport's
own ceiling, e.g. ipc-python-mem.
Server and consumers are separate processes, as in use. Consumers run with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (libzmq mallocs every received frame; large ones are fresh
mmaps, and with transparent huge pages far fewer page faults) unless --no-hugetlb.
Prints {bench:"serve", case, transport, consumer, round, frames, frames_per_sec, images_per_sec, gb_per_sec,
ratio_to_ring, cpu_seconds_per_frame, cpu_ratio_to_ring} per case and round (ratios against the in-process
ring measured in the same round; CPU time counts every thread of the loader, server and consumer).
Without --data it generates --images synthetic 64x64 raw shards first.\n`);
  process.exit(0);
}
const root = new URL('../', import.meta.url).pathname;

interface Measure {
  frames: number;
  images: number;
  bytes: number;
  seconds: number;
  /** CPU time over the timed window, every thread of every process involved. */
  cpu_seconds: number;
}

const cpuNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function nodeConsumer(endpoint: string, seconds: number, warmup: number): Promise<Measure> {
  const c = new ServeClient(endpoint, { receiveTimeoutMs: 300_000 });
  try {
    await c.hello({});
    let skip = warmup;
    let t0 = 0;
    let c0 = 0;
    const m: Measure = { frames: 0, images: 0, bytes: 0, seconds: 0, cpu_seconds: 0 };
    for (;;) {
      const msg = await c.next();
      if (!('kind' in msg)) continue;
      if (skip > 0) {
        if (--skip === 0) {
          t0 = performance.now();
          c0 = cpuNow();
          process.stdout.write('timing\n');
        }
        continue;
      }
      m.frames++;
      m.images += msg.info.shape[0]!;
      m.bytes += msg.bytes.length;
      if ((performance.now() - t0) / 1000 >= seconds) {
        m.seconds = (performance.now() - t0) / 1000;
        m.cpu_seconds = cpuNow() - c0;
        return m;
      }
    }
  } finally {
    c.close();
  }
}

if (v['serve-memory']) {
  // Child mode: a server whose frames come from memory, to measure the transport alone.
  const n = Number(v['batch-size']);
  const res = Number(v.res);
  const keys = Array.from({ length: n }, (_, i) => String(i).padStart(9, '0'));
  const slotBytes = maxFrameBytes({ n, channels: 3, height: res, width: res, maxKeyBytes: 9 });
  const window = Number(v.window);
  // One buffer more than can be held (window) or being written: a frame is never rewritten in flight.
  const slots = Array.from({ length: window + 2 }, () => new Uint8Array(new SharedArrayBuffer(slotBytes)));
  const source: FrameSource = {
    plan: { numSamples: 2 ** 40, batchSize: n, seed: 0, rank: 0, world: 1, mode: 'train' },
    info: { numClasses: 100, channels: 3, res },
    slotBytes,
    stepsPerEpoch: () => 1e9,
    async *epoch(epoch: number, start = 0) {
      for (let step = start; ; step++) {
        const slot = slots[step % slots.length]!;
        const l = writeFrameHeader(slot, { epoch, step, rank: 0, world: 1, n, channels: 3, height: res, width: res, keys });
        yield { epoch, step, frame: slot.subarray(0, l.totalBytes), release: () => undefined };
      }
    },
    close: async () => undefined,
  };
  const server = await FrameServer.start({ bind: [v['serve-memory']], sources: [source], window });
  process.stdout.write(`${JSON.stringify({ serving: server.endpoints })}\n`);
  process.on('SIGINT', () => void server.close().then(() => process.exit(0)));
  await new Promise(() => undefined);
}

if (v.consume) {
  // Child mode: the Node consumer in its own process.
  process.stdout.write(`${JSON.stringify(await nodeConsumer(v.consume, Number(v.seconds), Number(v.warmup)))}\n`);
  process.exit(0);
}
const batchSize = Number(v['batch-size']);
const seconds = Number(v.seconds);
const warmup = Number(v.warmup);
const who = resolveRank({ rank: v.rank, world: v.world });
const tmp = mkdtempSync(join(tmpdir(), 'bench-serve-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

let data = v.data;
if (!data) {
  data = join(tmp, 'ds');
  await syntheticShards(data, Number(v.images), 'raw');
}

async function ring(): Promise<Measure> {
  const loader = await Loader.open({ data: data!, batchSize, mode: 'train', workers: Number(v.workers), res: Number(v.res), rank: who.rank, world: who.world });
  try {
    let skip = warmup;
    let t0 = 0;
    let c0 = 0;
    const m: Measure = { frames: 0, images: 0, bytes: 0, seconds: 0, cpu_seconds: 0 };
    for (let epoch = 0; ; epoch++) {
      for await (const b of loader.epoch(epoch)) {
        if (skip > 0) {
          b.release();
          if (--skip === 0) {
            t0 = performance.now();
            c0 = cpuNow();
          }
          continue;
        }
        m.frames++;
        m.images += b.n;
        m.bytes += b.frame.length;
        b.release();
        if ((performance.now() - t0) / 1000 >= seconds) {
          m.seconds = (performance.now() - t0) / 1000;
          m.cpu_seconds = cpuNow() - c0;
          return m;
        }
      }
    }
  } finally {
    await loader.close();
  }
}

async function startServer(bind: string, memory: boolean): Promise<{ p: ChildProcess; endpoint: string }> {
  const args = memory
    ? [join(root, 'bench/serve.ts'), '--serve-memory', bind, '--batch-size', String(batchSize), '--res', v.res!, '--window', v.window!]
    : [
        join(root, 'src/cli/loader.ts'),
        'serve',
        '--data',
        data!,
        '--bind',
        bind,
        '--batch-size',
        String(batchSize),
        '--res',
        v.res!,
        '--workers',
        v.workers!,
        '--window',
        v.window!,
        '--prefetch',
        v.prefetch!,
        '--rank',
        String(who.rank),
        '--world',
        String(who.world),
        '--quiet',
      ];
  const p = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0]!;
      if (out.includes('\n')) resolve((JSON.parse(line) as { serving: string[] }).serving[0]!);
    });
    p.on('exit', (code) => reject(new Error(`serve exited with ${code}`)));
  });
  return { p, endpoint };
}

async function stopServer(p: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => p.on('exit', resolve));
  p.kill('SIGINT');
  await exited;
}

const consumerEnv = v['no-hugetlb'] ? process.env : { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' };

/** utime + stime of a process, in seconds (Linux). */
function procCpu(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** Runs a consumer process; the server's CPU time is counted from the consumer's "timing" line to its end. */
async function childConsumer(cmd: string, args: string[], server: ChildProcess): Promise<Measure> {
  const p = spawn(cmd, args, { env: consumerEnv, cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let s0 = NaN;
  p.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (Number.isNaN(s0) && out.includes('timing\n')) s0 = procCpu(server.pid!);
  });
  const code = await new Promise<number | null>((resolve) => p.on('exit', resolve));
  const s1 = procCpu(server.pid!);
  if (code !== 0) throw new Error(`consumer ${args.join(' ')} failed with ${code}`);
  const m = JSON.parse(out.trim().split('\n').pop()!) as Measure;
  m.cpu_seconds += s1 - s0;
  return m;
}

const pythonConsumer = (endpoint: string, server: ChildProcess): Promise<Measure> =>
  childConsumer('/usr/bin/python3', [join(root, 'examples/torch-ddp/client.py'), 'bench', endpoint, String(seconds), String(warmup)], server);
const nodeChild = (endpoint: string, server: ChildProcess): Promise<Measure> =>
  childConsumer(
    process.execPath,
    ['--import', 'tsx', join(root, 'bench/serve.ts'), '--consume', endpoint, '--seconds', String(seconds), '--warmup', String(warmup)],
    server,
  );

const hasPython = spawnSync('/usr/bin/python3', ['-c', 'import zmq, msgpack, numpy'], { stdio: 'ignore' }).status === 0;
const cases = v.cases!.split(',').filter(Boolean);
for (let round = 0; round < Number(v.rounds); round++) {
  let ringRate = NaN;
  let ringCpu = NaN;
  for (const name of cases) {
    let m: Measure;
    const [transport, consumer, mem] = name === 'ring' ? ['in-process', 'node', undefined] : (name.split('-') as [string, string, string | undefined]);
    if (consumer === 'python' && !hasPython) {
      process.stderr.write(`skipping ${name}: /usr/bin/python3 lacks zmq, msgpack or numpy (apt-get install python3-zmq python3-msgpack python3-numpy)\n`);
      continue;
    }
    if (name === 'ring') {
      m = await ring();
    } else {
      const bind = transport === 'ipc' ? `ipc://${join(tmp, `s${round}-${name}.sock`)}` : 'tcp://127.0.0.1:*';
      const { p, endpoint } = await startServer(bind, mem === 'mem');
      try {
        m = await (consumer === 'node' ? nodeChild(endpoint, p) : pythonConsumer(endpoint, p));
      } finally {
        await stopServer(p);
      }
    }
    const fps = m.frames / m.seconds;
    const cpuPerFrame = m.cpu_seconds / Math.max(1, m.frames);
    if (name === 'ring') {
      ringRate = fps;
      ringCpu = cpuPerFrame;
    }
    process.stdout.write(
      `${JSON.stringify({
        bench: 'serve',
        case: name,
        transport,
        consumer,
        source: name === 'ring' ? 'loader' : mem === 'mem' ? 'memory' : 'loader',
        round,
        batch_size: batchSize,
        res: Number(v.res),
        workers: Number(v.workers),
        frame_bytes: Math.round(m.bytes / Math.max(1, m.frames)),
        frames: m.frames,
        seconds: Number(m.seconds.toFixed(2)),
        frames_per_sec: Number(fps.toFixed(3)),
        images_per_sec: Math.round(m.images / m.seconds),
        gb_per_sec: Number((m.bytes / m.seconds / 1e9).toFixed(3)),
        ratio_to_ring: Number.isNaN(ringRate) ? null : Number((fps / ringRate).toFixed(3)),
        cpu_seconds_per_frame: Number(cpuPerFrame.toFixed(3)),
        // Frames per CPU-second relative to the ring: the rate ratio to expect where the CPUs are
        // the limit, less sensitive than wall-clock rates to other jobs on a shared machine.
        cpu_ratio_to_ring: Number.isNaN(ringCpu) ? null : Number((ringCpu / cpuPerFrame).toFixed(3)),
        hugetlb: name === 'ring' ? null : !v['no-hugetlb'],
      })}\n`,
    );
  }
}
