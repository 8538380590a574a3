// Which rank of how many this process is, from explicit flags or from the environment that an
// existing launcher sets: torchrun, Slurm's srun, or a Kubernetes Indexed Job. Every process of
// a data-parallel job computes its own share of the epoch plan from (rank, world), so getting
// these two numbers right is all the coordination the pipeline needs.

export type RankSource = 'flags' | 'torchrun' | 'slurm' | 'kubernetes' | 'default';

export interface RankInfo {
  rank: number;
  world: number;
  /** Where the numbers came from (a flag overrides its half of a launcher's pair). */
  source: RankSource;
  /** The variables or flags read, for messages: e.g. "RANK=1 WORLD_SIZE=4". */
  detail: string;
}

export class LauncherEnvError extends Error {
  override name = 'LauncherEnvError';
  constructor(
    /** The variable or flag at fault. */
    readonly variable: string,
    message: string,
  ) {
    super(message);
  }
}

type Env = Record<string, string | undefined>;

function parseCount(name: string, raw: string, min: number): number {
  const s = raw.trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new LauncherEnvError(name, `${name} must be an integer >= ${min}, got "${raw}"`);
  }
  return n;
}

interface Pair {
  source: RankSource;
  rankVar: string;
  worldVar: string;
}

// Order matters: torchrun inside a Slurm allocation sets RANK per process while SLURM_PROCID
// names the srun task that started torchrun, so torchrun's variables are the truth for a
// trainer process.
const LAUNCHERS: Pair[] = [
  { source: 'torchrun', rankVar: 'RANK', worldVar: 'WORLD_SIZE' },
  { source: 'slurm', rankVar: 'SLURM_PROCID', worldVar: 'SLURM_NTASKS' },
  // Indexed Jobs publish only the index; the count (the Job's completions) comes from --world
  // or WORLD_SIZE.
  { source: 'kubernetes', rankVar: 'JOB_COMPLETION_INDEX', worldVar: 'WORLD_SIZE' },
];

/**
 * The rank and world size: `flags` first (either may be given alone), then the first launcher
 * whose rank variable is set, else rank 0 of 1. Throws LauncherEnvError naming the variable or
 * flag when a value is malformed, when a rank has no world size, or when rank >= world.
 */
export function resolveRank(flags: { rank?: string | number | undefined; world?: string | number | undefined }, env: Env = process.env): RankInfo {
  const flagRank = flags.rank === undefined ? undefined : parseCount('--rank', String(flags.rank), 0);
  const flagWorld = flags.world === undefined ? undefined : parseCount('--world', String(flags.world), 1);
  const launcher = LAUNCHERS.find((l) => env[l.rankVar] !== undefined && env[l.rankVar] !== '');
  let rank = flagRank;
  let world = flagWorld;
  const used: string[] = [];
  if (flagRank !== undefined) used.push(`--rank ${flagRank}`);
  if (flagWorld !== undefined) used.push(`--world ${flagWorld}`);
  let source: RankSource = used.length > 0 ? 'flags' : 'default';
  if (launcher && (rank === undefined || world === undefined)) {
    if (rank === undefined) {
      rank = parseCount(launcher.rankVar, env[launcher.rankVar]!, 0);
      used.push(`${launcher.rankVar}=${rank}`);
      source = launcher.source;
    }
    if (world === undefined) {
      const raw = env[launcher.worldVar];
      if (raw === undefined || raw === '') {
        throw new LauncherEnvError(
          launcher.worldVar,
          `${launcher.rankVar} is set (${env[launcher.rankVar]}) but ${launcher.worldVar} is not: pass --world N` +
            (launcher.source === 'kubernetes' ? " (the Job's completions) or set WORLD_SIZE" : ''),
        );
      }
      world = parseCount(launcher.worldVar, raw, 1);
      used.push(`${launcher.worldVar}=${world}`);
      if (source === 'flags' || source === 'default') source = launcher.source;
    }
  }
  if (world === undefined) {
    // Only a rank flag: a world size is needed to make it mean anything.
    if (rank !== undefined && rank > 0) throw new LauncherEnvError('--world', `--rank ${rank} needs --world (or a launcher's world size)`);
    world = 1;
  }
  rank ??= 0;
  if (rank >= world) {
    throw new LauncherEnvError(used[0]?.split(/[ =]/)[0] ?? '--rank', `rank ${rank} is not below the world size ${world} (${used.join(' ')})`);
  }
  return { rank, world, source, detail: used.length > 0 ? used.join(' ') : 'no launcher variables' };
}

/**
 * Parses a set of ranks of `world`: "all", "3", "0,2,5" or ranges "0-3" (combinable: "0-1,4").
 * Sorted, without duplicates; LauncherEnvError('--ranks') on anything else or out of range.
 */
export function parseRanks(spec: string, world: number): number[] {
  if (spec.trim() === 'all') return Array.from({ length: world }, (_, i) => i);
  const out = new Set<number>();
  for (const part of spec.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new LauncherEnvError('--ranks', `--ranks must be "all" or a list like 0,2,4-7, got "${spec}"`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new LauncherEnvError('--ranks', `--ranks range ${part.trim()} is empty`);
    if (b >= world) throw new LauncherEnvError('--ranks', `--ranks ${part.trim()} is not below the world size ${world}`);
    for (let r = a; r <= b; r++) out.add(r);
  }
  return [...out].sort((x, y) => x - y);
}

/**
 * For single-process commands (the TypeScript trainer): a clear error when a launcher started
 * several processes, since each would train alone on the whole dataset.
 */
export function assertSingleProcess(command: string, env: Env = process.env): void {
  let info: RankInfo;
  try {
    info = resolveRank({}, env);
  } catch {
    return;
  }
  if (info.world > 1) {
    throw new LauncherEnvError(
      info.detail.split('=')[0] ?? 'WORLD_SIZE',
      `${command} runs in one process and has no data-parallel support yet, but this environment says world size ${info.world} (${info.detail}). ` +
        'Train data-parallel with PyTorch DDP fed by `npm run loader -- serve` (examples/torch-ddp), or run this command outside the multi-process launcher.',
    );
  }
}
