"""Run an :class:`NbdServer` on its own event loop in a background thread.

For tests and tools that drive real (blocking) NBD clients from ordinary code::

    with BackgroundNbdServer({"vm1": MemoryBackend(64 << 20)}) as srv:
        subprocess.run(["qemu-img", "info", srv.uri("vm1")], check=True)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from difs.nbd.backend import NbdBackend
from difs.nbd.server import NbdServer

T = TypeVar("T")


class BackgroundNbdServer:
    """An NbdServer listening on 127.0.0.1 (free port) and a Unix socket, in a thread."""

    def __init__(
        self,
        exports: Mapping[str, NbdBackend] | None = None,
        *,
        unix: bool = True,
        use_uvloop: bool = True,
        **server_kwargs: Any,
    ) -> None:
        self._exports = dict(exports or {})
        self._server_kwargs = server_kwargs
        self._want_unix = unix
        self._use_uvloop = use_uvloop
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: NbdServer | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.unix_path: str | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BackgroundNbdServer:
        if self._use_uvloop:
            try:
                import uvloop

                self.loop = uvloop.new_event_loop()
            except ImportError:  # pragma: no cover
                self.loop = asyncio.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="nbd-server", daemon=True
        )
        self._thread.start()
        self.server = NbdServer(self._exports, **self._server_kwargs)
        self.host, self.port = self.call(self.server.start_tcp("127.0.0.1", 0))
        if self._want_unix:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="difs-nbd-")
            path = os.path.join(self._tmpdir.name, "nbd.sock")
            self.unix_path = self.call(self.server.start_unix(path))
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, func, *args) -> None:
        """Run a plain function on the server's loop and wait for it."""

        async def _run():
            return func(*args)

        return self.call(_run())

    def uri(self, export: str) -> str:
        return f"nbd://{self.host}:{self.port}/{export}"

    def unix_uri(self, export: str) -> str:
        return f"nbd+unix:///{export}?socket={self.unix_path}"

    def stop(self) -> None:
        if self.loop is None:
            return
        if self.server is not None:
            self.call(self.server.close(timeout=5.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.loop.close()
        self.loop = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> BackgroundNbdServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
