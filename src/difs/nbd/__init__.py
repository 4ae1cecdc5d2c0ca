"""NBD server through which applications reach their disks on the host.

Any NBD client is an application: QEMU, qemu-img, qemu-io, nbdcopy, nbdinfo, fio's nbd engine.

- :mod:`difs.nbd.connection` — sans-I/O server core (handshake, options, transmission)
- :mod:`difs.nbd.negotiation` — what each option means (GO/INFO/LIST/meta contexts...)
- :mod:`difs.nbd.wire`, :mod:`difs.nbd.constants` — encoders, structs, wire numbers
- :mod:`difs.nbd.events`, :mod:`difs.nbd.errors` — what the core reports / raises
- :mod:`difs.nbd.backend` — :class:`NbdBackend` interface, :class:`MemoryBackend`,
  :class:`FileBackend`
- :mod:`difs.nbd.server` — :class:`NbdServer`, the asyncio adapter (TCP and Unix sockets)
- :mod:`difs.nbd.client` — a small blocking client for diagnostics and tests

Standalone: ``python -m difs.nbd --file disk.img --export vm1 --listen 127.0.0.1:10809``.
"""

from difs.nbd.backend import FileBackend, MemoryBackend, NbdBackend
from difs.nbd.connection import NbdServerConnection
from difs.nbd.errors import LocalProtocolError, NbdBackendError, NbdError
from difs.nbd.server import NbdExportStats, NbdServer

__all__ = [
    "FileBackend",
    "LocalProtocolError",
    "MemoryBackend",
    "NbdBackend",
    "NbdBackendError",
    "NbdError",
    "NbdExportStats",
    "NbdServer",
    "NbdServerConnection",
]
