"""Standalone NBD server for one file or in-memory export (tests, benchmarks, quick use).

    python -m difs.nbd --file disk.img --export vm1 --listen 127.0.0.1:10809 [--unix PATH]
    python -m difs.nbd --memory 256M --export bench --listen 127.0.0.1:0

Bounded like the host's NBD server: at most ``--max-connections`` open (one more is closed at
once), ``--handshake-timeout`` / ``--handshake-idle`` seconds to choose an export, and
``--max-in-flight`` requests / ``--max-in-flight-bytes`` per connection.

Prints one ``listening tcp HOST PORT`` / ``listening unix PATH`` line per listener on stdout
once it accepts connections; stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from difs.nbd.backend import FileBackend, MemoryBackend, NbdBackend
from difs.nbd.server import (
    DEFAULT_HANDSHAKE_IDLE,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    NbdServer,
)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'64M' -> 67108864 (K/M/G/T are powers of 1024; an optional trailing 'iB'/'B')."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    number = t[: len(t) - len(unit)]
    try:
        value = int(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def seconds(text: str) -> float | None:
    """'10' -> 10.0; '0' -> None (no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m difs.nbd", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="serve this file or block device")
    src.add_argument("--memory", type=parse_size, help="serve an in-memory disk of this size")
    p.add_argument("--export", default="", help="export name (default: the empty name)")
    p.add_argument("--listen", type=parse_listen, help="HOST:PORT (port 0 picks a free one)")
    p.add_argument("--unix", help="also (or only) listen on this Unix socket")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--block-size", type=int, default=512, help="minimum block size (512)")
    p.add_argument("--max-in-flight", type=positive_int, default=64,
                   help="requests per connection (64)")
    p.add_argument("--max-in-flight-bytes", type=parse_size, default=64 << 20,
                   help="request payload bytes per connection (64M)")
    p.add_argument("--max-connections", type=positive_int, default=DEFAULT_MAX_CONNECTIONS,
                   help=f"connections open at once; more are closed at once "
                        f"({DEFAULT_MAX_CONNECTIONS})")
    p.add_argument("--handshake-timeout", type=seconds, default=DEFAULT_HANDSHAKE_TIMEOUT,
                   help=f"seconds from connecting to choosing an export, 0: no limit "
                        f"({DEFAULT_HANDSHAKE_TIMEOUT:g})")
    p.add_argument("--handshake-idle", type=seconds, default=DEFAULT_HANDSHAKE_IDLE,
                   help=f"seconds for one handshake step, 0: no limit "
                        f"({DEFAULT_HANDSHAKE_IDLE:g})")
    p.add_argument("--log-level", default="WARNING")
    return p


async def serve(args: argparse.Namespace) -> None:
    backend: NbdBackend
    if args.file:
        backend = FileBackend(args.file, read_only=args.read_only, block_size=args.block_size)
    else:
        backend = MemoryBackend(args.memory, block_size=args.block_size, read_only=args.read_only)
    server = NbdServer({args.export: backend}, max_in_flight=args.max_in_flight,
                       max_in_flight_bytes=args.max_in_flight_bytes,
                       max_connections=args.max_connections,
                       handshake_timeout=args.handshake_timeout,
                       handshake_idle=args.handshake_idle)
    listen = args.listen
    if listen is None and not args.unix:
        listen = ("127.0.0.1", 10809)
    if listen is not None:
        host, port = await server.start_tcp(*listen)
        print(f"listening tcp {host} {port}", flush=True)
    if args.unix:
        print(f"listening unix {await server.start_unix(args.unix)}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close(close_backends=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
