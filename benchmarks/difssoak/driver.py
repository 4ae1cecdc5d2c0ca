"""The applications: one thread and one NBD connection each (difs' own blocking NBD client).

Each application runs a throttled random mix of writes (4-32 KiB, every sector in the
:mod:`.pattern`), reads (checked against the model as they arrive) and flushes. On an error
it records what the application saw (by kind), and on a lost connection it reconnects
after a short back-off, as a careful application would. Every I/O's issue and completion
times are kept, so recovery after a fault can be read off afterwards.
"""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from difs.nbd import constants as c
from difs.nbd.client import NbdClient, NbdClientError

from .pattern import SECTOR, AppModel, Verdict

#: relative weights of the operations
MIX = {"write": 5, "read": 4, "flush": 1}
MAX_SECTORS = 64  # 32 KiB
ALIGN = 8  # 4 KiB


def error_kind(exc: BaseException, *, connecting: bool) -> str:
    """What an application would call the failure: ``io: EIO``, ``connect: refused``..."""
    where = "connect" if connecting else "io"
    if isinstance(exc, NbdClientError):
        if exc.error:
            return f"{where}: {errno.errorcode.get(exc.error, exc.error)}"
        return f"{where}: {c.REPLY_TYPE_NAMES.get(exc.reply_type, 'NBD error')}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"{where}: timeout"
    if isinstance(exc, (ConnectionError, EOFError)):
        return f"{where}: connection lost"
    if isinstance(exc, OSError):
        return f"{where}: {errno.errorcode.get(exc.errno or 0, type(exc).__name__)}"
    return f"{where}: {type(exc).__name__}"


def open_export(port: int, name: str, *, timeout: float) -> NbdClient:
    client = NbdClient.connect_tcp("127.0.0.1", port, timeout=timeout)
    try:
        client.handshake()
        client.negotiate_structured_replies()
        client.export = client.go(name)
    except BaseException:
        client.close()
        raise
    return client


@dataclass
class AppStats:
    ops: Counter = field(default_factory=Counter)  # successful operations by kind
    bytes: int = 0
    errors: Counter = field(default_factory=Counter)  # by kind
    #: (monotonic time, kind) of every error
    error_log: list[tuple[float, str]] = field(default_factory=list)
    #: (issued, completed, ok) of every I/O (monotonic)
    timeline: list[tuple[float, float, bool]] = field(default_factory=list)
    #: what reads saw while running: sectors by verdict (not current), and examples
    online: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    flushed_writes: int = 0
    in_doubt_writes: int = 0  # acknowledged, then the connection was lost before a flush
    reconnects: int = 0


class AppDriver(threading.Thread):
    def __init__(self, name: str, port: int, size: int, *, rate: float, seed: int,
                 stop: threading.Event, io_timeout: float = 90.0) -> None:
        super().__init__(name=f"app-{name}", daemon=True)
        self.app = name
        self.port = port
        self.model = AppModel(name, size // SECTOR)
        self.rate = rate
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.io_timeout = io_timeout
        self.stats = AppStats()
        self.client: NbdClient | None = None
        self.started = time.monotonic()

    def run(self) -> None:
        self.started = time.monotonic()
        backoff = 0.2
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            if self.client is None:
                if not self._connect():
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.2
            next_at = max(next_at + self.rng.uniform(0.5, 1.5) / self.rate, time.monotonic())
            if self.stop_event.wait(max(0.0, next_at - time.monotonic())):
                break
            self._one_op()
        if self.client is not None:
            self.client.close()

    def _connect(self) -> bool:
        try:
            self.client = open_export(self.port, self.app, timeout=self.io_timeout)
        except Exception as exc:
            self._error(exc, connecting=True)
            return False
        self.stats.reconnects += 1
        return True

    def _error(self, exc: BaseException, *, connecting: bool) -> None:
        kind = error_kind(exc, connecting=connecting)
        self.stats.errors[kind] += 1
        self.stats.error_log.append((time.monotonic(), kind))

    def _one_op(self) -> None:
        op = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        count = ALIGN * self.rng.randint(1, MAX_SECTORS // ALIGN)
        first = ALIGN * self.rng.randrange((self.model.sectors - count) // ALIGN + 1)
        t0 = time.monotonic()
        gen = None
        try:
            if op == "write":
                gen, data = self.model.begin_write(first, count)
                self.client.write(first * SECTOR, data)
                self.model.write_acked(gen)
            elif op == "read":
                self._check(first, self.client.read(first * SECTOR, count * SECTOR))
            else:
                self.client.flush()
                self.stats.flushed_writes += self.model.flush_acked()
        except (NbdClientError, OSError, EOFError) as exc:
            self.stats.timeline.append((t0, time.monotonic(), False))
            self._error(exc, connecting=False)
            if not (isinstance(exc, NbdClientError) and exc.error):  # the connection is gone
                self._drop()
            return
        self.stats.timeline.append((t0, time.monotonic(), True))
        self.stats.ops[op] += 1
        self.stats.bytes += count * SECTOR if op != "flush" else 0

    def _drop(self) -> None:
        self.stats.in_doubt_writes += self.model.connection_lost()
        self.client.close()
        self.client = None

    def _check(self, first: int, data: bytes) -> None:
        for verdict, sectors in self.model.judge_extent(first, data).items():
            self.stats.online[verdict.value] += len(sectors)
            if len(self.stats.examples) < 5:
                self.stats.examples.append(f"{verdict.value}: sectors {sectors[:4]} (of "
                                           f"{len(sectors)}) read at "
                                           f"{time.monotonic() - self.started:.1f} s")


@dataclass
class Verification:
    app: str
    sectors: int = 0
    verdicts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    error: str | None = None  # the volume could not be read back
    seconds: float = 0.0


def verify(app: str, port: int, model: AppModel, *, deadline: float,
           chunk: int = 256 << 10) -> Verification:
    """Read the whole volume back and judge every sector; keep trying to connect until
    ``deadline`` (monotonic) if the export is not served yet."""
    out = Verification(app)
    t0 = time.monotonic()
    size = model.sectors * SECTOR
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with open_export(port, app, timeout=60) as client:
                for offset in range(0, size, chunk):
                    data = client.read(offset, min(chunk, size - offset))
                    first = offset // SECTOR
                    for verdict, sectors in model.judge_extent(first, data).items():
                        out.verdicts[verdict.value] += len(sectors)
                        if len(out.examples) < 5:
                            out.examples.append(f"{verdict.value}: sectors {sectors[:4]} "
                                                f"(of {len(sectors)})")
                out.sectors = model.sectors
                out.seconds = time.monotonic() - t0
                return out
        except (NbdClientError, OSError, EOFError) as exc:
            last = exc
            out.verdicts.clear()
            out.examples.clear()
            time.sleep(1.0)
    out.error = f"not verified: {error_kind(last, connecting=False) if last else 'no time'}"
    out.seconds = time.monotonic() - t0
    return out


def verified_ok(v: Verification) -> bool:
    return v.error is None and not v.verdicts.get(Verdict.LOST_FLUSHED.value) \
        and not v.verdicts.get(Verdict.CORRUPT.value)
