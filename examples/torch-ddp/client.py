"""Python consumer of `npm run loader -- serve`: batch frames over ZeroMQ, exact by position.

Needs pyzmq, msgpack and numpy (Debian: python3-zmq python3-msgpack python3-numpy); torch only
for `to_torch`. The protocol (README, "Serving frames"), in short:

    DEALER connects; sends {op: "hello", rank, world, epoch, step, window}
    server answers {op: "ready", ...}, then frames (msgpack maps with "images"), each of which
    the consumer acknowledges with {op: "ack", epoch, step}; {op: "end_epoch"} after an epoch,
    {op: "end"} after the last; {op: "error", code, message} when something is wrong.

Frames are parsed without copying the image bytes: numpy arrays view the ZeroMQ message.
"""
import warnings

import msgpack
import numpy as np
import zmq

_BIN_HEADER = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_DTYPES = {"float32": "<f4", "uint8": "u1"}


class ServeError(Exception):
    """An error message from the server (code is one of the README's error codes)."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Reader:
    """File-like view of a buffer from `pos` on, so msgpack's Unpacker reads the small entries
    of a frame and never the (large) bin sections, which are located here instead."""

    def __init__(self, mv, pos):
        self.mv, self.pos = mv, pos

    def read(self, n):
        b = self.mv[self.pos : self.pos + n]
        self.pos += len(b)
        return bytes(b)


def parse_message(buf):
    """(fields, bins) of one msgpack map: `fields` holds the decoded small entries, `bins` maps
    each bin entry's key to (offset, length) in `buf`. Works for any key order and encoding."""
    mv = memoryview(buf).cast("B")
    base = 0
    unp = msgpack.Unpacker(_Reader(mv, 0), raw=False, read_size=4096)
    count = unp.read_map_header()
    fields, bins = {}, {}
    for _ in range(count):
        key = unp.unpack()
        at = base + unp.tell()
        head = _BIN_HEADER.get(mv[at])
        if head is None:
            fields[key] = unp.unpack()
            continue
        length = int.from_bytes(mv[at + 1 : at + 1 + head], "big")
        bins[key] = (at + 1 + head, length)
        base = at + 1 + head + length
        unp = msgpack.Unpacker(_Reader(mv, base), raw=False, read_size=4096)
    return fields, bins


class Batch:
    """One frame: numpy views of its labels (int32) and images (N, C, H, W; float32, or uint8
    with per-channel `mean`/`std` to normalise with), valid as long as the Batch lives."""

    def __init__(self, buf, fields, bins):
        self.buffer = buf
        self.epoch, self.step = fields["epoch"], fields["step"]
        self.rank, self.world = fields["rank"], fields["world"]
        self.keys = fields["keys"]
        self.dtype = fields["dtype"]
        n, c, h, w = fields["shape"]
        self.shape = (n, c, h, w)
        meta = fields.get("meta") or {}
        self.mean = fields.get("mean", meta.get("mean"))
        self.std = fields.get("std", meta.get("std"))
        if self.dtype not in _DTYPES:
            raise ServeError("bad-frame", f"unsupported dtype {self.dtype!r}")
        self.fields = fields
        lo, ll = bins["labels"]
        io, il = bins["images"]
        dt = np.dtype(_DTYPES[self.dtype])
        if il != n * c * h * w * dt.itemsize or ll != 4 * n:
            raise ServeError("bad-frame", f"sections do not match shape {self.shape}")
        self.labels = np.frombuffer(buf, dtype="<i4", count=n, offset=lo)
        self.images = np.frombuffer(buf, dtype=dt, count=n * c * h * w, offset=io).reshape(n, c, h, w)

    def to_torch(self, device, pinned=None):
        """(images float32 normalised, labels int64) on `device`. From a float32 frame that is a
        copy into pinned memory and an asynchronous transfer (CUDA) or a view (CPU); a uint8 frame
        travels as uint8 (4x fewer bytes) and is normalised on the device."""
        import torch

        with warnings.catch_warnings():
            # The message buffer is read-only; the tensors are only read.
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(self.images)
            y = torch.from_numpy(self.labels)
        dev = torch.device(device)
        if dev.type == "cuda":
            if pinned is not None:
                x = pinned.stage(x)
            else:
                x = x.pin_memory()
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
        y = y.long()
        if self.dtype == "uint8":
            c = self.shape[1]
            mean = torch.tensor(self.mean, dtype=torch.float32, device=dev).view(1, c, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=dev).view(1, c, 1, 1)
            x = (x.float() - mean) / std
        return x, y


class PinnedStager:
    """Reused page-locked buffers, so a host-to-device copy runs asynchronously without a new
    pinned allocation per batch; a buffer is rewritten only after its previous copy finished."""

    def __init__(self, count=2):
        self.bufs, self.events, self.i, self.count = [], [], 0, count

    def stage(self, x):
        import torch

        if len(self.bufs) < self.count:
            self.bufs.append(torch.empty(x.shape, dtype=x.dtype).pin_memory())
            self.events.append(None)
        i = self.i % len(self.bufs)
        self.i += 1
        if self.bufs[i].shape != x.shape or self.bufs[i].dtype != x.dtype:
            self.bufs[i] = torch.empty(x.shape, dtype=x.dtype).pin_memory()
        if self.events[i] is not None:
            self.events[i].synchronize()
        self.bufs[i].copy_(x)
        ev = torch.cuda.Event()
        ev.record()
        self.events[i] = ev
        return self.bufs[i]


class EndEpoch:
    def __init__(self, epoch, steps):
        self.epoch, self.steps = epoch, steps


class FrameClient:
    """A consumer of one rank's frames. `hello(epoch, step)` positions it (again at any time:
    a restarted trainer passes its checkpoint's position); then `next()` returns a Batch (already
    acknowledged), an EndEpoch, or None after the server's last epoch."""

    def __init__(self, endpoint, rank=None, world=None, window=None, timeout_ms=None, context=None, **expect):
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if timeout_ms is not None:
            self.sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.hello_fields = {"rank": rank, "world": world, "window": window, **expect}
        self.ready = None

    def _send(self, msg):
        self.sock.send(msgpack.packb(msg, use_bin_type=True))

    def _recv(self):
        try:
            frame = self.sock.recv(copy=False)
        except zmq.Again:
            raise TimeoutError(f"no message from {self.endpoint} in time") from None
        buf = frame.buffer
        fields, bins = parse_message(buf)
        return frame, buf, fields, bins

    def hello(self, epoch=None, step=None):
        msg = {"op": "hello", **{k: v for k, v in self.hello_fields.items() if v is not None}}
        if epoch is not None:
            msg["epoch"] = epoch
        if step is not None:
            msg["step"] = step
        self._send(msg)
        while True:
            _, _, fields, _ = self._recv()
            op = fields.get("op")
            if op is None:
                # A frame of an earlier request: acknowledge it so the server can free it.
                self._send({"op": "ack", "epoch": fields["epoch"], "step": fields["step"]})
            elif op == "ready":
                self.ready = fields
                return fields
            elif op == "error":
                raise ServeError(fields["code"], fields["message"])

    def next(self):
        _, buf, fields, bins = self._recv()
        op = fields.get("op")
        if op is None:
            self._send({"op": "ack", "epoch": fields["epoch"], "step": fields["step"]})
            return Batch(buf, fields, bins)
        if op == "error":
            raise ServeError(fields["code"], fields["message"])
        if op == "end_epoch":
            return EndEpoch(fields["epoch"], fields["steps"])
        if op == "end":
            return None
        raise ServeError("bad-request", f"unexpected {op!r} from the server")

    def __iter__(self):
        while True:
            m = self.next()
            if m is None:
                return
            yield m

    def close(self):
        self.sock.close(0)


def _bench(argv):
    """Receive frames as fast as possible: python3 client.py bench <endpoint> [seconds] [warmup]."""
    import json
    import time

    endpoint = argv[0]
    seconds = float(argv[1]) if len(argv) > 1 else 5.0
    warmup = int(argv[2]) if len(argv) > 2 else 2
    c = FrameClient(endpoint, timeout_ms=120_000)
    ready = c.hello()
    frames = images = nbytes = 0
    t0 = None
    checksum = 0
    for m in c:
        if not isinstance(m, Batch):
            continue
        if warmup > 0:
            warmup -= 1
            if warmup == 0:
                t0, c0 = time.perf_counter(), time.process_time()
                print("timing", flush=True)
            continue
        frames += 1
        images += m.shape[0]
        nbytes += len(m.buffer)
        checksum ^= int(m.labels[0])
        if time.perf_counter() - t0 >= seconds:
            break
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.close()
    print(json.dumps({"frames": frames, "images": images, "bytes": nbytes, "seconds": dt, "cpu_seconds": cpu, "batch_size": ready["batch_size"]}))


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 3 and sys.argv[1] == "bench":
        _bench(sys.argv[2:])
    else:
        sys.exit("usage: client.py bench <endpoint> [seconds] [warmup]")
