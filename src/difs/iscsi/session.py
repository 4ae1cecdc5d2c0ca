"""Target-side sessions: the ``Session`` record and the ``SessionTable`` registry.

A session is identified by (InitiatorName, ISID, TargetPortalGroupTag) — the I_T nexus — and
named on the wire by its TSIH. ``SessionTable`` allocates TSIHs, finds sessions for non-leading
logins and implements session reinstatement (RFC 7143 6.3.5): a new leading login (TSIH 0) with
the key of an existing session replaces it — at most ``ReinstatementThrottle.limit`` times
in ``window`` seconds while the old session still has a connection: past that, two initiators
are using one initiator name and ISID and would reinstate each other's sessions forever, so
the newcomer is answered 03/01 SERVICE UNAVAILABLE (retryable) and the holder keeps its
session.

The session also owns the CmdSN window shared by its connections (RFC 7143 4.2.2.1):
``exp_cmd_sn`` .. ``max_cmd_sn``, the commands that arrived early (``pending``) and the count of
tasks in flight that sizes the window.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .constants import LoginStatus
from .errors import LoginFailure
from .serial import SERIAL_MASK, serial_gt

if TYPE_CHECKING:
    from .params import NegotiatedParams
    from .target_connection import TargetConnection


class Session:
    """One iSCSI session as seen by the target.

    ``params`` is what the leading login settled (``NegotiatedParams``: identity, security,
    digests, operational keys). The few values the per-PDU path reads are copied from it into
    plain attributes (identity, InitialR2T, ImmediateData, the burst lengths, MaxOutstandingR2T).
    """

    def __init__(self, params: NegotiatedParams, *, isid: int, tpgt: int,
                 initiator_alias: str | None = None, target_alias: str | None = None,
                 command_window: int = 128) -> None:
        self.params = params
        self.initiator_name = params.initiator_name
        self.initiator_alias = initiator_alias
        self.isid = isid
        self.tpgt = tpgt
        self.tsih = 0
        self.session_type = params.session_type  # "Normal" or "Discovery"
        self.target_name = params.target_name
        self.target_alias = target_alias
        # read per PDU
        self.max_burst_length = params.max_burst_length
        self.first_burst_length = params.first_burst_length
        self.initial_r2t = params.initial_r2t
        self.immediate_data = params.immediate_data
        self.max_outstanding_r2t = params.max_outstanding_r2t
        # connections by CID
        self.connections: dict[int, TargetConnection] = {}
        # CmdSN window
        self.command_window = command_window
        self.exp_cmd_sn = 0
        self.max_cmd_sn = 0
        self.outstanding = 0  # tasks received and not yet answered
        self.pending: dict[int, tuple[Any, Any]] = {}  # CmdSN -> (handler, argument)

    @property
    def key(self) -> tuple[str, int, int, str | None]:
        """The session identifier as the target sees it: initiator port (name + ISID) and
        target port (target name + portal group). Sessions of one initiator port to two
        different targets are distinct (RFC 7143 4.4.1): only a login repeating all four
        reinstates a session."""
        return (self.initiator_name, self.isid, self.tpgt, self.target_name)

    @property
    def initiator_port(self) -> str:
        """SCSI initiator port name (I_T nexus id), RFC 7143 10.1.1."""
        return f"{self.initiator_name},i,0x{self.isid:012x}"

    @property
    def is_discovery(self) -> bool:
        return self.session_type == "Discovery"

    def start_sequence(self, cmdsn: int) -> None:
        self.exp_cmd_sn = cmdsn
        self.max_cmd_sn = (cmdsn + self.command_window - 1) & SERIAL_MASK

    def open_window(self) -> None:
        """Advance MaxCmdSN as far as the window allows; it never moves back (RFC 7143
        4.2.2.1: initiators ignore a smaller MaxCmdSN)."""
        room = self.command_window - self.outstanding - len(self.pending)
        candidate = (self.exp_cmd_sn + room - 1) & SERIAL_MASK
        if serial_gt(candidate, self.max_cmd_sn):
            self.max_cmd_sn = candidate

    def __repr__(self) -> str:
        params = self.params
        return (f"Session(tsih={self.tsih}, {self.initiator_port}, target={self.target_name}, "
                f"type={self.session_type}, auth={params.auth_method}, "
                f"digests={int(params.header_digest)}{int(params.data_digest)})")


class ReinstatementThrottle:
    """How often the session of one I_T nexus may be reinstated while it is in use."""

    #: reinstatements of live sessions allowed per key within ``window`` seconds
    limit = 3
    window = 10.0
    #: keys remembered at most (older ones are forgotten first)
    max_keys = 4096

    def __init__(self) -> None:
        self._times: dict[tuple, deque[float]] = {}

    def check(self, session: Session, now: float) -> None:
        """Count a reinstatement of ``session``'s live session at ``now``, or raise
        :class:`LoginFailure` (03/01) when it has been reinstated too often of late."""
        key = session.key
        times = self._times.get(key)
        if times is None:
            if len(self._times) >= self.max_keys:
                del self._times[next(iter(self._times))]
            times = self._times[key] = deque(maxlen=self.limit)
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.limit:
            raise LoginFailure(
                f"initiator name {session.initiator_name} ISID 0x{session.isid:012x} is being "
                f"used by two initiators: its session was reinstated {len(times)} times in "
                f"{self.window:g}s while in use; try again later",
                status=LoginStatus.SERVICE_UNAVAILABLE)
        times.append(now)


class SessionTable:
    """Registry of the sessions of one portal group (or a whole target node)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int, int, str | None], Session] = {}
        self._by_tsih: dict[int, Session] = {}
        self._next_tsih = 1
        # CHAP challenges currently outstanding on any connection (reflection detection)
        self.issued_challenges: set[bytes] = set()
        self.reinstatements = ReinstatementThrottle()

    def __len__(self) -> int:
        return len(self._by_tsih)

    def __iter__(self):
        return iter(list(self._by_tsih.values()))

    def by_tsih(self, tsih: int) -> Session | None:
        return self._by_tsih.get(tsih)

    def by_key(self, initiator_name: str, isid: int, tpgt: int,
               target_name: str | None = None) -> Session | None:
        return self._by_key.get((initiator_name, isid, tpgt, target_name))

    def _allocate_tsih(self) -> int:
        for _ in range(0xFFFF):
            tsih = self._next_tsih
            self._next_tsih = tsih % 0xFFFF + 1  # 1..65535, never 0
            if tsih not in self._by_tsih:
                return tsih
        raise LoginFailure("no free TSIH", status=LoginStatus.OUT_OF_RESOURCES)

    def register(self, session: Session, *, now: float | None = None) -> Session | None:
        """Give ``session`` a TSIH and register it; return the session it reinstates, if any.

        With ``now``, reinstating a session that still has a connection is throttled
        (:class:`ReinstatementThrottle`: :class:`LoginFailure` 03/01, nothing changed)."""
        old = self._by_key.get(session.key)
        if old is not None and old.connections and now is not None:
            self.reinstatements.check(session, now)
        if old is not None:
            self.remove(old)
        session.tsih = self._allocate_tsih()
        self._by_key[session.key] = session
        self._by_tsih[session.tsih] = session
        return old

    def remove(self, session: Session) -> None:
        if self._by_tsih.get(session.tsih) is session:
            del self._by_tsih[session.tsih]
        if self._by_key.get(session.key) is session:
            del self._by_key[session.key]
