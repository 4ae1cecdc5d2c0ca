"""Structured logs: one line per event, ``key=value`` for people or JSON for machines.

Call sites name an event and give its fields::

    log_event(log, "login", initiator=name, target=iqn, digests="header")

and the processes choose the rendering once, at start (``setup_logging``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = "difs_fields"


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO,
              exc_info: BaseException | None = None, **fields: Any) -> None:
    """Log ``event`` with ``fields`` (and ``exc_info``'s traceback when given)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, exc_info=exc_info, extra={_FIELDS: fields})


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, _FIELDS, {})
        tail = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name} {record.getMessage()}"
        if tail:
            line = f"{line} {tail}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name,
               "event": record.getMessage(), **getattr(record, _FIELDS, {})}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(*, level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # one line per request to the manager is noise in a node's log
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


class RateLimitedEvent:
    """A log event that may repeat in floods: at most ``burst`` lines per ``interval`` seconds.

    The first ``burst`` occurrences of an interval are logged at once; the others are only
    counted, and the next line logged carries that count as ``suppressed=N``::

        refused = RateLimitedEvent(log, "connection refused", level=logging.WARNING)
        refused(peer=peer, limit=256)
    """

    def __init__(self, logger: logging.Logger, event: str, *, interval: float = 10.0,
                 level: int = logging.INFO, burst: int = 1, clock=time.monotonic) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.logger, self.event, self.interval, self.level = logger, event, interval, level
        self.burst = burst
        self._clock = clock
        self._window_end = float("-inf")
        self._lines = 0  # lines logged in the current interval
        self.suppressed = 0  # occurrences not logged since the last line
        self.count = 0  # all occurrences

    def __call__(self, **fields: Any) -> None:
        self.count += 1
        now = self._clock()
        if now >= self._window_end:
            self._window_end = now + self.interval
            self._lines = 0
        if self._lines >= self.burst:
            self.suppressed += 1
            return
        self._lines += 1
        if self.suppressed:
            fields["suppressed"] = self.suppressed
            self.suppressed = 0
        log_event(self.logger, self.event, level=self.level, **fields)


class RateLimitedLog:
    """:class:`RateLimitedEvent` per event name and level, made on first use: for a call
    site that logs several events a flood repeats (``log(event, level, **fields)``)."""

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0, burst: int = 1,
                 clock=time.monotonic) -> None:
        self.logger, self.interval, self.burst, self._clock = logger, interval, burst, clock
        self.events: dict[tuple[str, int], RateLimitedEvent] = {}

    def __call__(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        limited = self.events.get((event, level))
        if limited is None:
            limited = self.events[(event, level)] = RateLimitedEvent(
                self.logger, event, interval=self.interval, level=level, burst=self.burst,
                clock=self._clock)
        limited(**fields)
