"""Errors of the NBD server.

::

    NbdError                      base of everything raised by difs.nbd
    ├── NbdBackendError(errno)    a backend refuses one request; carries the NBD wire error
    │                             (EIO, ENOSPC, EINVAL, EPERM, ENOTSUP, ...). The server answers
    │                             that request with it and keeps the connection.
    └── LocalProtocolError        the *local* code misused the protocol core (replied twice to
                                  a request, replied in the wrong phase). A bug, never caused by
                                  the peer.

A peer's fault never raises: the core turns it into an error reply (``RequestRejected``) or,
when the byte stream cannot be trusted any more, a ``ProtocolViolation`` event after which the
adapter closes that one connection. ``ProtocolViolationError`` is used only inside the core to
unwind a parse; it does not escape ``receive_data``/``next_event``.
"""

from __future__ import annotations

import errno as _errno

from difs.nbd import constants as c

# Host errno values that have a natural NBD wire equivalent. Everything else becomes EIO.
_ERRNO_TO_WIRE = {
    _errno.EPERM: c.EPERM,
    _errno.EACCES: c.EPERM,
    _errno.EROFS: c.EPERM,
    _errno.EIO: c.EIO,
    _errno.ENOMEM: c.ENOMEM,
    _errno.EINVAL: c.EINVAL,
    _errno.ENOSPC: c.ENOSPC,
    _errno.EDQUOT: c.ENOSPC,
    _errno.EFBIG: c.ENOSPC,
    _errno.EOVERFLOW: c.EOVERFLOW,
    _errno.ENOTSUP: c.ENOTSUP,
    _errno.EOPNOTSUPP: c.ENOTSUP,
    _errno.ESHUTDOWN: c.ESHUTDOWN,
}


def wire_error(errno: int | None) -> int:
    """Map a host errno to an error value the NBD protocol allows (unknown -> EIO)."""
    if errno is None:
        return c.EIO
    return _ERRNO_TO_WIRE.get(errno, c.EIO)


class NbdError(Exception):
    """Base of all difs.nbd exceptions."""


class NbdBackendError(NbdError):
    """A backend failed one request; ``error`` is the NBD wire error to send back."""

    def __init__(self, errno: int, message: str = "") -> None:
        self.error = wire_error(errno)
        self.message = message or _errno.errorcode.get(errno, f"error {errno}")
        super().__init__(errno, self.message)


class LocalProtocolError(NbdError):
    """The local side used the protocol core wrongly (a bug in difs, not in the peer)."""


class ProtocolViolationError(NbdError):
    """Internal to the core: the peer broke the protocol beyond recovery (ends the connection)."""
