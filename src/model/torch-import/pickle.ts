// A pickle reader for the subset of the format that PyTorch state dicts use, which never runs
// anything. Python's unpickler imports whatever module and calls whatever callable the stream
// names (GLOBAL + REDUCE is "call os.system(...)"); here a name resolves only if the caller put
// it in an allow-list, to an inert value or to a TypeScript function written for it, and REDUCE
// can only call such functions. Everything else is refused:
//   1. Before anything is built, scanPickle walks every opcode (parsing arguments only) and
//      throws PickleSecurityError at the first GLOBAL or INST naming something not allowed.
//   2. While building, STACK_GLOBAL (whose names come off the stack) is checked the same way.
//   3. Opcodes that build arbitrary objects (INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT*) and the text
//      opcodes of protocol 0 are not supported at all.
// Resource use is bounded by the input: every length is checked against the bytes left.
import { PickleError, PickleSecurityError } from './errors.ts';

/** Values with no Python literal counterpart here (tensors, storages, allowed globals). */
export abstract class PyOpaque {
  abstract readonly pyType: string;
  /** BUILD (obj.__setstate__(state)); refused unless a subclass allows it. */
  build(_state: PyValue): void {
    throw new Error(`BUILD is not supported on ${this.pyType}`);
  }
}

/** An allowed global with no behaviour of its own (a storage type, a class used as a tag). */
export class PyGlobal extends PyOpaque {
  readonly pyType = 'global';
  constructor(readonly qualname: string) {
    super();
  }
}

/** An allowed callable: REDUCE runs `fn`, TypeScript written for exactly this name. */
export class PyCallable extends PyOpaque {
  readonly pyType = 'callable';
  constructor(
    readonly qualname: string,
    readonly fn: (args: readonly PyValue[]) => PyValue,
  ) {
    super();
  }
}

export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

export class PyList {
  constructor(readonly items: PyValue[] = []) {}
}

export type DictKey = string | number | bigint | boolean | null;

export class PyDict {
  readonly map = new Map<DictKey, PyValue>();
  /** Attributes set by BUILD (an OrderedDict's _metadata, for state dicts). */
  readonly attrs = new Map<string, PyValue>();
  constructor(readonly pyType: 'dict' | 'collections.OrderedDict' = 'dict') {}
  get(key: DictKey): PyValue | undefined {
    return this.map.get(key);
  }
}

/** Python ints are numbers when they fit a double exactly, bigints otherwise; bytes are Uint8Array. */
export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyTuple | PyList | PyDict | PyOpaque;

export interface UnpickleOptions {
  /** "module.name" -> the value GLOBAL pushes. Anything absent is refused. */
  globals: ReadonlyMap<string, PyValue>;
  /** BINPERSID: persistent id -> object (torch.save's storages). Without it, BINPERSID fails. */
  persistentLoad?: (pid: PyValue) => PyValue;
  /** Extra words for the PickleSecurityError of a refused name. */
  securityHint?: (qualname: string) => string;
}

// Opcodes, and how long each one's argument is, for the scan (protocols 0-5, as pickletools).
type ArgKind = 'none' | 'u1' | 'u2' | 'i4' | 'u4' | 'u8' | 'f8' | 'len1' | 'len4' | 'len8' | 'nl' | 'nl2';
const OPS: Record<number, [string, ArgKind]> = {};
const def = (c: string | number, name: string, arg: ArgKind = 'none'): void => {
  OPS[typeof c === 'string' ? c.charCodeAt(0) : c] = [name, arg];
};
def('(', 'MARK');
def('.', 'STOP');
def('0', 'POP');
def('1', 'POP_MARK');
def('2', 'DUP');
def('F', 'FLOAT', 'nl');
def('I', 'INT', 'nl');
def('J', 'BININT', 'i4');
def('K', 'BININT1', 'u1');
def('L', 'LONG', 'nl');
def('M', 'BININT2', 'u2');
def('N', 'NONE');
def('P', 'PERSID', 'nl');
def('Q', 'BINPERSID');
def('R', 'REDUCE');
def('S', 'STRING', 'nl');
def('T', 'BINSTRING', 'len4');
def('U', 'SHORT_BINSTRING', 'len1');
def('V', 'UNICODE', 'nl');
def('X', 'BINUNICODE', 'len4');
def('a', 'APPEND');
def('b', 'BUILD');
def('c', 'GLOBAL', 'nl2');
def('d', 'DICT');
def('}', 'EMPTY_DICT');
def('e', 'APPENDS');
def('g', 'GET', 'nl');
def('h', 'BINGET', 'u1');
def('i', 'INST', 'nl2');
def('j', 'LONG_BINGET', 'u4');
def('l', 'LIST');
def(']', 'EMPTY_LIST');
def('o', 'OBJ');
def('p', 'PUT', 'nl');
def('q', 'BINPUT', 'u1');
def('r', 'LONG_BINPUT', 'u4');
def('s', 'SETITEM');
def('t', 'TUPLE');
def(')', 'EMPTY_TUPLE');
def('u', 'SETITEMS');
def('G', 'BINFLOAT', 'f8');
def(0x80, 'PROTO', 'u1');
def(0x81, 'NEWOBJ');
def(0x82, 'EXT1', 'u1');
def(0x83, 'EXT2', 'u2');
def(0x84, 'EXT4', 'i4');
def(0x85, 'TUPLE1');
def(0x86, 'TUPLE2');
def(0x87, 'TUPLE3');
def(0x88, 'NEWTRUE');
def(0x89, 'NEWFALSE');
def(0x8a, 'LONG1', 'len1');
def(0x8b, 'LONG4', 'len4');
def('B', 'BINBYTES', 'len4');
def('C', 'SHORT_BINBYTES', 'len1');
def(0x8c, 'SHORT_BINUNICODE', 'len1');
def(0x8d, 'BINUNICODE8', 'len8');
def(0x8e, 'BINBYTES8', 'len8');
def(0x8f, 'EMPTY_SET');
def(0x90, 'ADDITEMS');
def(0x91, 'FROZENSET');
def(0x92, 'NEWOBJ_EX');
def(0x93, 'STACK_GLOBAL');
def(0x94, 'MEMOIZE');
def(0x95, 'FRAME', 'u8');
def(0x96, 'BYTEARRAY8', 'len8');
def(0x97, 'NEXT_BUFFER');
def(0x98, 'READONLY_BUFFER');

export interface PickleOp {
  name: string;
  code: number;
  /** Offset of the opcode byte. */
  offset: number;
  /** Offset of the argument's first byte (after a length prefix, for strings and bytes). */
  argStart: number;
  argEnd: number;
  /** Numeric argument (u1/u2/i4/u4/u8 kinds), or the two names of GLOBAL / INST. */
  value?: number | [string, string];
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function readLine(data: Uint8Array, at: number): number {
  const nl = data.indexOf(0x0a, at);
  if (nl < 0) throw new PickleError(at, 'unterminated text argument');
  return nl;
}

/**
 * The opcodes of `data` up to STOP, parsed but not executed (pickletools.genops). Throws on an
 * unknown opcode or an argument that runs past the end.
 */
export function* pickleOps(data: Uint8Array): Generator<PickleOp> {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let p = 0;
  for (;;) {
    if (p >= data.length) throw new PickleError(p, 'stream ends without STOP');
    const offset = p;
    const code = data[p++]!;
    const op = OPS[code];
    if (!op) throw new PickleError(offset, `unknown opcode 0x${code.toString(16).padStart(2, '0')}`);
    const [name, kind] = op;
    const need = (n: number): void => {
      if (p + n > data.length) throw new PickleError(offset, `${name} needs ${n} more bytes, ${data.length - p} left`);
    };
    let value: PickleOp['value'];
    let argStart = p;
    switch (kind) {
      case 'none':
        break;
      case 'u1':
        need(1);
        value = data[p]!;
        p += 1;
        break;
      case 'u2':
        need(2);
        value = view.getUint16(p, true);
        p += 2;
        break;
      case 'i4':
        need(4);
        value = view.getInt32(p, true);
        p += 4;
        break;
      case 'u4':
        need(4);
        value = view.getUint32(p, true);
        p += 4;
        break;
      case 'u8': {
        need(8);
        const v = view.getBigUint64(p, true);
        value = v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
        p += 8;
        break;
      }
      case 'f8':
        need(8);
        p += 8;
        break;
      case 'len1':
      case 'len4':
      case 'len8': {
        const w = kind === 'len1' ? 1 : kind === 'len4' ? 4 : 8;
        need(w);
        let n: number;
        if (w === 1) n = data[p]!;
        else if (w === 4) n = name === 'BINSTRING' || name === 'LONG4' ? view.getInt32(p, true) : view.getUint32(p, true);
        else {
          const v = view.getBigUint64(p, true);
          n = v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
        }
        if (n < 0) throw new PickleError(offset, `${name} has negative length ${n}`);
        p += w;
        argStart = p;
        need(n);
        p += n;
        break;
      }
      case 'nl':
        p = readLine(data, p) + 1;
        break;
      case 'nl2': {
        const e1 = readLine(data, p);
        const e2 = readLine(data, e1 + 1);
        const dec = new TextDecoder('utf-8');
        value = [dec.decode(data.subarray(p, e1)), dec.decode(data.subarray(e1 + 1, e2))];
        p = e2 + 1;
        break;
      }
    }
    yield { name, code, offset, argStart, argEnd: p, ...(value !== undefined ? { value } : {}) };
    if (name === 'STOP') return;
  }
}

function refuse(qualname: string, offset: number, options: UnpickleOptions): never {
  throw new PickleSecurityError(qualname, offset, options.securityHint?.(qualname) ?? '');
}

/** Throws PickleSecurityError at the first GLOBAL/INST that names something not in `globals`. */
export function scanPickle(data: Uint8Array, options: UnpickleOptions): void {
  for (const op of pickleOps(data)) {
    if (op.name === 'GLOBAL' || op.name === 'INST') {
      const [mod, name] = op.value as [string, string];
      const q = `${mod}.${name}`;
      if (!options.globals.has(q)) refuse(q, op.offset, options);
    }
  }
}

const MAX_LONG_BYTES = 1024;

function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function isKey(v: PyValue): v is DictKey {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean';
}

/** Unpickles `data` after scanning it; see the top of this file for what is refused. */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PyValue {
  scanPickle(data, options);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: PyValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let offset = 0;
  const fail = (reason: string): never => {
    throw new PickleError(offset, reason);
  };
  const floor = (): number => (marks.length ? marks[marks.length - 1]! : 0);
  const pop = (): PyValue => {
    if (stack.length <= floor()) fail('stack underflow');
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length <= floor()) fail('stack underflow');
    return stack[stack.length - 1]!;
  };
  const popMark = (): PyValue[] => {
    if (!marks.length) fail('no MARK to pop to');
    return stack.splice(marks.pop()!);
  };
  const str = (op: PickleOp): string => {
    try {
      return utf8.decode(data.subarray(op.argStart, op.argEnd));
    } catch {
      return fail(`${op.name} is not valid UTF-8`);
    }
  };
  const setItems = (dict: PyValue, items: PyValue[]): void => {
    if (!(dict instanceof PyDict)) fail('SETITEM(S) on something that is not a dict');
    if (items.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i]!;
      if (!isKey(k)) fail(`dict key of an unsupported type (${describe(k)})`);
      (dict as PyDict).map.set(k as DictKey, items[i + 1]!);
    }
  };
  const append = (list: PyValue, items: PyValue[]): void => {
    if (!(list instanceof PyList)) fail('APPEND(S) on something that is not a list');
    (list as PyList).items.push(...items);
  };
  const resolve = (mod: string, name: string): PyValue => {
    const q = `${mod}.${name}`;
    const v = options.globals.get(q);
    if (v === undefined) refuse(q, offset, options);
    return v!;
  };

  for (const op of pickleOps(data)) {
    offset = op.offset;
    switch (op.name) {
      case 'PROTO':
        if ((op.value as number) > 5) fail(`protocol ${op.value} is newer than 5`);
        break;
      case 'FRAME':
        break;
      case 'STOP': {
        const result = pop();
        return result;
      }
      case 'MARK':
        marks.push(stack.length);
        break;
      case 'POP':
        pop();
        break;
      case 'POP_MARK':
        popMark();
        break;
      case 'DUP':
        stack.push(top());
        break;
      case 'NONE':
        stack.push(null);
        break;
      case 'NEWTRUE':
        stack.push(true);
        break;
      case 'NEWFALSE':
        stack.push(false);
        break;
      case 'BININT':
      case 'BININT1':
      case 'BININT2':
        stack.push(op.value as number);
        break;
      case 'LONG1':
      case 'LONG4':
        // Decoding is quadratic in the length; no state dict has an int anywhere near this.
        if (op.argEnd - op.argStart > MAX_LONG_BYTES) fail(`${op.name} of ${op.argEnd - op.argStart} bytes is too large`);
        stack.push(decodeLong(data.subarray(op.argStart, op.argEnd)));
        break;
      case 'BINFLOAT':
        stack.push(view.getFloat64(op.argStart, false));
        break;
      case 'BINUNICODE':
      case 'SHORT_BINUNICODE':
      case 'BINUNICODE8':
        stack.push(str(op));
        break;
      case 'BINBYTES':
      case 'SHORT_BINBYTES':
      case 'BINBYTES8':
        stack.push(data.slice(op.argStart, op.argEnd));
        break;
      case 'EMPTY_DICT':
        stack.push(new PyDict());
        break;
      case 'EMPTY_LIST':
        stack.push(new PyList());
        break;
      case 'EMPTY_TUPLE':
        stack.push(new PyTuple([]));
        break;
      case 'TUPLE':
        stack.push(new PyTuple(popMark()));
        break;
      case 'TUPLE1': {
        const a = pop();
        stack.push(new PyTuple([a]));
        break;
      }
      case 'TUPLE2': {
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b]));
        break;
      }
      case 'TUPLE3': {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b, c]));
        break;
      }
      case 'LIST':
        stack.push(new PyList(popMark()));
        break;
      case 'DICT': {
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 'SETITEM': {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 'SETITEMS': {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 'APPEND': {
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 'APPENDS': {
        const items = popMark();
        append(top(), items);
        break;
      }
      case 'BINPUT':
      case 'LONG_BINPUT':
        memo.set(op.value as number, top());
        break;
      case 'MEMOIZE':
        memo.set(memo.size, top());
        break;
      case 'BINGET':
      case 'LONG_BINGET': {
        const v = memo.get(op.value as number);
        if (v === undefined) fail(`memo slot ${op.value} is empty`);
        stack.push(v!);
        break;
      }
      case 'GLOBAL': {
        const [mod, name] = op.value as [string, string];
        stack.push(resolve(mod, name));
        break;
      }
      case 'STACK_GLOBAL': {
        const name = pop();
        const mod = pop();
        if (typeof mod !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(resolve(mod as string, name as string));
        break;
      }
      case 'REDUCE': {
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PyCallable)) fail(`REDUCE calls ${describe(fn)}, which is not an allowed callable`);
        if (!(args instanceof PyTuple)) fail(`REDUCE arguments are ${describe(args)}, not a tuple`);
        const f = fn as PyCallable;
        try {
          stack.push(f.fn((args as PyTuple).items));
        } catch (e) {
          if (e instanceof PickleError) throw e;
          fail(`${f.qualname}: ${(e as Error).message}`);
        }
        break;
      }
      case 'BUILD': {
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) {
          // obj.__dict__.update(state), or (dict_state, slot_state) for objects with slots.
          const parts = state instanceof PyTuple ? state.items : [state];
          for (const part of parts) {
            if (part === null) continue;
            if (!(part instanceof PyDict)) fail(`BUILD state of a dict is ${describe(part)}`);
            for (const [k, v] of (part as PyDict).map) {
              if (typeof k !== 'string') fail('BUILD attribute names must be strings');
              obj.attrs.set(k as string, v);
            }
          }
        } else if (obj instanceof PyOpaque) {
          try {
            obj.build(state);
          } catch (e) {
            fail((e as Error).message);
          }
        } else {
          fail(`BUILD on ${describe(obj)}`);
        }
        break;
      }
      case 'BINPERSID': {
        const pid = pop();
        if (!options.persistentLoad) fail('persistent ids are not supported here');
        try {
          stack.push(options.persistentLoad!(pid));
        } catch (e) {
          if (e instanceof PickleError) throw e;
          fail(`persistent id: ${(e as Error).message}`);
        }
        break;
      }
      default:
        fail(`opcode ${op.name} is not supported (state dicts do not need it)`);
    }
  }
  return fail('stream ends without STOP');
}

/** A short description of a value for error messages. */
export function describe(v: PyValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'None';
  if (typeof v === 'string') return `str ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'number' || typeof v === 'bigint') return `number ${v}`;
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (v instanceof Uint8Array) return `bytes[${v.length}]`;
  if (v instanceof PyTuple) return `tuple[${v.items.length}]`;
  if (v instanceof PyList) return `list[${v.items.length}]`;
  if (v instanceof PyDict) return `${v.pyType}[${v.map.size}]`;
  if (v instanceof PyGlobal || v instanceof PyCallable) return v.qualname;
  return v.pyType;
}
