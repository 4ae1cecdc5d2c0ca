"""The host's errors, each with what it becomes at the edge (exit code, NBD errno, retry).

Exception tree::

    Exception
     ├── HostError                  a request the host cannot honour (bad option, unknown
     │    │                         application, no such export): ``difs host`` exits 2 with
     │    │                         the message; the manager link logs it for that binding only
     │    ├── state.StateRefused    the persisted bindings are torn, edited, keyless or another
     │    │                         node's: logged, none of them is started
     │    └── manager_link.BindingError  a binding without volume or endpoint: that binding
     │                              is ``failed`` with the reason
     ├── PathFailed                 the path (one iSCSI connection) broke with a command in
     │    │                         flight: the command is re-sent on another satisfying path
     │    └── CommandTimedOut       the command was not answered in time and the controller
     │                              confirmed its ABORT TASK: it did not run, the path works,
     │                              re-sent (EIO after ``recovery.MAX_TIMEOUTS``)
     ├── LoginError                 the controller refused a path's login or never answered
     │                              it (``status`` = class << 8 | detail): the path stays
     │                              down and is retried with backoff; I/O never downgrades
     └── difs.nbd.NbdBackendError   an errno for the NBD client (EIO after the recovery rules
          │                         give up; see ``host/recovery.py``)
          └── ProtectionUnavailable EMEDIUMTYPE: the volume cannot carry the T10 PI the
                                    application's policy needs (refused at start or at a
                                    policy change, nothing changed)

What decides between re-send, another path and EIO is :func:`difs.host.recovery.decide`;
these classes only carry the outcome.
"""

from __future__ import annotations

import errno

from difs.nbd.errors import NbdBackendError

#: Login status 0201h: the target could not authenticate the initiator (RFC 7143 11.13.5).
AUTHENTICATION_FAILURE = 0x0201


class HostError(Exception):
    """A host request that cannot be honoured; the message says what to do."""


class PathFailed(Exception):
    """The path broke while a command was in flight; the command may be re-sent elsewhere."""


class CommandTimedOut(PathFailed):
    """The command was not answered in time and the controller confirmed its abort:
    it did not run, the path still works, and the command can be sent again."""


class LoginError(Exception):
    """The controller refused the login (or never answered it); the message says why.

    ``status`` is the Login Response status (class << 8 | detail), 0 when there was none.
    """

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def authentication_failed(self) -> bool:
        return self.status == AUTHENTICATION_FAILURE or "CHAP" in str(self)


class ProtectionUnavailable(NbdBackendError):
    """The volume cannot give the application the protection information its policy needs."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EMEDIUMTYPE, message)
