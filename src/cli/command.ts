// What every command shares: the usage-error type, exit codes, where output goes, the outer
// error handling (usage error -> 2 with a pointer to --help, any other failure -> 1 naming the
// error, the stack only with DEBUG set) and Ctrl-C handling (the first asks the job to stop
// cleanly, the second quits at once with 130), and the output-folder lock (a second writer exits
// 75, EX_TEMPFAIL: the folder is being written by another process; try again later).
import { acquireOutputLock, OutputLockedError } from '../shared/output-lock.ts';

export const EXIT = { ok: 0, failure: 1, usage: 2, locked: 75, interrupted: 130 } as const;

/** A wrong command line: unknown flag, bad value, missing argument. Exit 2. */
export class UsageError extends Error {
  override readonly name: string = 'UsageError';
  /** The flag at fault (without dashes), when there is one. */
  readonly option: string | undefined;
  constructor(message: string, option?: string) {
    super(option ? `--${option}: ${message}` : message);
    this.option = option;
  }
}

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Where SIGINT is listened for (tests pass an EventEmitter). */
  signals?: Pick<NodeJS.Process, 'on' | 'off'>;
  /** Exit at once (a second Ctrl-C); tests replace it. */
  exit?: (code: number) => never;
}

export const defaultIo: CliIo = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

/** node:util parseArgs' own errors (unknown option, missing value) are usage errors too. */
function isUsage(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'));
}

/** Prints an error as "<cmd>: <Name>: <message>" (the stack only with DEBUG set); returns 1. */
export function reportFailure(cmd: string, e: unknown, io: Pick<CliIo, 'stderr'>): number {
  // Errors carry their own what/where; the stack helps only for bugs, so keep it out of the way.
  const err = e instanceof Error ? e : new Error(String(e));
  io.stderr(`${cmd}: ${err.name && err.name !== 'Error' ? `${err.name}: ` : ''}${err.message}\n`);
  if (process.env['DEBUG']) io.stderr(`${err.stack ?? ''}\n`);
  return EXIT.failure;
}

export function reportUsage(cmd: string, e: unknown, io: Pick<CliIo, 'stderr'>): number {
  io.stderr(`${cmd}: ${(e as Error).message}\n(see: npm run ${cmd} -- --help)\n`);
  return EXIT.usage;
}

/** Runs a command body and turns what it throws into the exit code and message. */
export async function runCommand(cmd: string, io: Pick<CliIo, 'stderr'>, body: () => Promise<number> | number): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof OutputLockedError) {
      io.stderr(`${cmd}: ${e.message}\n`);
      return EXIT.locked;
    }
    return isUsage(e) ? reportUsage(cmd, e, io) : reportFailure(cmd, e, io);
  }
}

/**
 * Runs `body` holding the lock of the output folder `out` (one writer per folder); a stale lock
 * of a dead process is taken over with a message.
 */
export async function withOutputLock<T>(out: string, command: string, io: Pick<CliIo, 'stderr'>, body: () => Promise<T>): Promise<T> {
  const lock = acquireOutputLock(out, command, (stale) =>
    io.stderr(`note: took over the lock of ${out} left by pid ${stale.pid} (${stale.command}), which no longer runs\n`),
  );
  try {
    return await body();
  } finally {
    lock.release();
  }
}

/**
 * Ctrl-C while `run` is running: the first press prints `first` and calls `stop` (the job
 * finishes its current unit and stops cleanly), a second one prints `second` and exits 130.
 */
export async function withInterrupt<T>(io: CliIo, messages: { first: string; second: string }, stop: () => void, run: () => Promise<T>): Promise<T> {
  const signals = io.signals ?? process;
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts++;
    if (interrupts === 1) {
      io.stderr(`\ninterrupt: ${messages.first}\n`);
      stop();
    } else {
      io.stderr(`\ninterrupt: ${messages.second}\n`);
      (io.exit ?? process.exit)(EXIT.interrupted);
    }
  };
  signals.on('SIGINT', onSigint);
  try {
    return await run();
  } finally {
    signals.off('SIGINT', onSigint);
  }
}
