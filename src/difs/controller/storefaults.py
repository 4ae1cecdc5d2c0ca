"""How the controller reports a fault of a volume's backing store.

The SCSI core answers the one command the store failed (:func:`difs.scsi.sense.store_error`:
DATA PROTECT 27h/07h for a full file system, MEDIUM ERROR for EIO, HARDWARE ERROR for
anything else) and tells its logical unit's ``on_store_fault``; this is that hook for a
volume.  Each kind of fault is one rate-limited log line per volume (a full disk fails
every write until space is freed: the first is logged, the rest counted), and an
unexpected failure also logs its traceback once per volume and exception type.
"""

from __future__ import annotations

import errno
import logging
import os

from difs.sam.sense import DATA_PROTECT, MEDIUM_ERROR, parse_sense, sense_text
from difs.scsi.sense import ScsiError
from difs.util.logs import RateLimitedEvent, log_event

log = logging.getLogger("difs.controller")

#: the kinds of store fault: (sense key of the answer or None for any other) -> (kind, event)
_EVENTS = {
    DATA_PROTECT: ("space", "volume out of space", logging.WARNING),
    MEDIUM_ERROR: ("medium", "volume I/O error", logging.ERROR),
    None: ("internal", "volume store failure", logging.ERROR),
}


def describe(exc: BaseException) -> str:
    """``ENOSPC (No space left on device)`` for an OSError, else the exception's repr."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name} ({exc.strerror or os.strerror(exc.errno)})"
    return repr(exc)


class StoreFaultLog:
    """``LogicalUnit.on_store_fault`` for one volume: logs each fault kind rate-limited."""

    def __init__(self, volume: str, *, interval: float = 10.0) -> None:
        self.volume = volume
        self._events = {key: (kind, RateLimitedEvent(log, event, level=level,
                                                     interval=interval))
                        for key, (kind, event, level) in _EVENTS.items()}
        self._traced: set[type] = set()

    def __call__(self, exc: Exception, err: ScsiError, cdb) -> None:
        sense = err.sense()
        kind, event = self._events.get(parse_sense(sense)[0], self._events[None])
        fields = dict(volume=self.volume, opcode=f"{cdb[0]:02x}h" if len(cdb) else "-",
                      error=describe(exc), answer=sense_text(sense))
        if kind == "internal" and type(exc) not in self._traced:
            self._traced.add(type(exc))
            log_event(log, "volume store failure traceback", level=logging.ERROR,
                      exc_info=exc, **fields)
        event(**fields)
