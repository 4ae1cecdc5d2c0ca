"""Enforcement of each volume's data-in-flight policy on every I/O that addresses it.

The controller knows every volume's policy from the volume's own metadata
(``VolumeMeta.policy``: the ``PolicyServices`` document mirrored by the manager, or given
with ``difs controller --policy VOL=TIER|FILE.json``).  Each I/O is judged against that
policy *and the session it arrived on*; what fails is refused with

    CHECK CONDITION, DATA PROTECT (7h), 74h/71h LOGICAL UNIT ACCESS NOT AUTHORIZED

counted per volume and per session (:class:`IoStats`) and logged with the application,
the volume and the path (initiator port and channel = ISID & FFFFh).  SPC-4 offers no
finer ASCQ for these causes, so the sense is one code and the *reason* is in the log and
the metrics:

================  ============================================================================
reason            refused when
================  ============================================================================
header_digest     the policy requires CRC32C header digests, the session has HeaderDigest=None
data_digest       the policy requires CRC32C data digests, the session has DataDigest=None
                  (libiscsi and QEMU never negotiate DataDigest: such volumes are for difs'
                  own initiator)
chap              the policy requires CHAP, the session did not authenticate
mutual_chap       the policy requires mutual CHAP, the target was not asked to prove itself
tls               the policy requires TLS (this controller offers no TLS)
pi_format         the policy requires PI type *t* and the volume is not formatted with it
pi_required       the policy requires PI end to end and a READ/WRITE(6/10/12/16) or WRITE AND
                  VERIFY carries protect field 000b: the host must send PI (WRPROTECT=001b)
                  and receive it (RDPROTECT=001b), so the controller neither makes up PI for
                  data nobody protected nor strips it before the host could check it
                  (VERIFY, WRITE SAME, UNMAP, COMPARE AND WRITE with 000b stay allowed: the
                  controller generates / checks PI for them)
policy_unreadable the volume's stored policy does not validate (fail closed; the log says why)
service_class     the CDB's GROUP NUMBER (a difs host's service class) is not 0 and does not
                  cover the volume's class (:func:`difs.policy.fast.class_covers`); a tag of 0
                  (standard initiators) is judged by the session's negotiated services only
================  ============================================================================

A wrong *application tag* in received PI is SBC-4's own check (ABORTED COMMAND 10h/02h from
the logical unit, when the volume has an expected tag); the adapter counts it as reason
``app_tag`` too.

The session reasons (digests, CHAP, TLS, PI format) apply to every command except those
that only *describe* the logical unit and move no application data - INQUIRY, REPORT LUNS,
REQUEST SENSE, TEST UNIT READY, READ CAPACITY(10/16), MODE SENSE(6/10), REPORT SUPPORTED
OPERATION CODES / TASK MANAGEMENT FUNCTIONS - so initiators and administrators' tools
(``iscsi-ls``, ``iscsi-inq``, ``iscsi-readcapacity16``) still see the volume, its size and
its PI format, and the refusal comes with the first command that reads, writes or changes
the volume (READ, WRITE, VERIFY, WRITE SAME, UNMAP, GET LBA STATUS, reservations, MODE
SELECT, ...).  The command reasons apply to the commands that carry a protect field or a
GROUP NUMBER.

Hot path: a policy is compiled once per version (:class:`VolumePolicy`); the first I/O of a
session to a volume builds a :class:`Guard` holding the precomputed verdict of the session's
services against the policy, so each I/O costs an identity test, an integer test and, only
for volumes that need it, a table lookup and two bit tests on the CDB.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from difs.controller.qos import ClientInfo
from difs.policy.fast import (
    AUTH,
    DATA_DIGEST,
    HEADER_DIGEST,
    MUTUAL_AUTH,
    PI,
    PI_TYPE1,
    PI_TYPE3,
    TLS,
    NegotiatedServices,
    Requirement,
    describe_flags,
)
from difs.policy.evidence import LatencyRecorder
from difs.policy.services import PolicyServices
from difs.sam.sense import ASC_LU_ACCESS_NOT_AUTHORIZED, DATA_PROTECT, build_sense
from difs.sam import cdb as C
from difs.util.logs import log_event

log = logging.getLogger("difs.controller")

REJECT_SENSE_KEY = DATA_PROTECT
REJECT_ASC = ASC_LU_ACCESS_NOT_AUTHORIZED

#: session services a policy can require, in the order reasons are reported
_SESSION_REASONS = (
    (DATA_DIGEST, "data_digest"),
    (HEADER_DIGEST, "header_digest"),
    (AUTH, "chap"),
    (MUTUAL_AUTH, "mutual_chap"),
    (TLS, "tls"),
)
SESSION_BITS = HEADER_DIGEST | DATA_DIGEST | AUTH | MUTUAL_AUTH | TLS

REASONS = ("header_digest", "data_digest", "chap", "mutual_chap", "tls", "pi_format",
           "policy_unreadable", "pi_required", "service_class", "app_tag")

#: commands answered whatever the session: they only describe the logical unit
DESCRIBE = frozenset({C.INQUIRY, C.REPORT_LUNS, C.REQUEST_SENSE, C.TEST_UNIT_READY,
                      C.READ_CAPACITY_10, C.MODE_SENSE_6, C.MODE_SENSE_10, C.MAINTENANCE_IN})


def describes_only(cdb) -> bool:
    """True for a command that only describes the logical unit (see the module doc)."""
    op = cdb[0]
    if op == C.SERVICE_ACTION_IN_16:
        return cdb[1] & 0x1F == C.SAI_READ_CAPACITY_16
    return op in DESCRIBE

#: opcode -> (offset of the GROUP NUMBER byte or -1, protect field must be non-zero when
#: the policy requires PI end to end)
COMMAND_CHECKS: dict[int, tuple[int, bool]] = {
    C.READ_6: (-1, True), C.WRITE_6: (-1, True),
    C.READ_10: (6, True), C.WRITE_10: (6, True), C.WRITE_AND_VERIFY_10: (6, True),
    C.READ_12: (10, True), C.WRITE_12: (10, True), C.WRITE_AND_VERIFY_12: (10, True),
    C.READ_16: (14, True), C.WRITE_16: (14, True), C.WRITE_AND_VERIFY_16: (14, True),
    C.VERIFY_10: (6, False), C.VERIFY_12: (10, False), C.VERIFY_16: (14, False),
    C.WRITE_SAME_10: (6, False), C.WRITE_SAME_16: (14, False),
    C.SYNCHRONIZE_CACHE_10: (6, False), C.SYNCHRONIZE_CACHE_16: (14, False),
    C.PRE_FETCH_10: (6, False), C.PRE_FETCH_16: (14, False),
    C.ORWRITE_16: (14, False), C.WRITE_ATOMIC_16: (14, False),
}

EXPLAIN = {
    "header_digest": "the volume's policy requires CRC32C header digests and this session "
                     "negotiated HeaderDigest=None",
    "data_digest": "the volume's policy requires CRC32C data digests and this session "
                   "negotiated DataDigest=None (libiscsi and QEMU cannot negotiate DataDigest; "
                   "use difs' own initiator)",
    "chap": "the volume's policy requires CHAP and this session did not authenticate",
    "mutual_chap": "the volume's policy requires mutual CHAP and this session's target "
                   "did not authenticate to the initiator",
    "tls": "the volume's policy requires TLS, which this controller does not offer",
    "pi_format": "the volume's policy requires protection information the volume is not "
                 "formatted with",
    "pi_required": "the volume's policy requires protection information end to end and "
                   "this command's RDPROTECT/WRPROTECT is 000b (no PI sent or received)",
    "policy_unreadable": "the volume's stored policy is not a valid policy document",
    "service_class": "the I/O's service class (CDB GROUP NUMBER) does not cover the "
                     "volume's class",
    "app_tag": "the protection information carried a wrong application tag",
}


def session_flags(session: Any) -> int:
    """The services an iSCSI target :class:`~difs.iscsi.session.Session` negotiated, as
    :mod:`difs.policy.fast` flag bits (once per login; the host derives its paths' services
    with the same :meth:`NegotiatedServices.from_login`)."""
    return NegotiatedServices.from_login(session.params).flags


def reject_sense(*, descriptor: bool) -> bytes:
    return build_sense(REJECT_SENSE_KEY, *REJECT_ASC, descriptor=descriptor)


_SENSE = {False: reject_sense(descriptor=False), True: reject_sense(descriptor=True)}


@dataclass(frozen=True)
class VolumePolicy:
    """A volume's policy compiled for enforcement (one per policy version)."""

    volume: str
    application: str
    version: int
    requirement: Requirement
    pi_type: int  #: how the volume is formatted (0: no PI)
    #: why the stored policy could not be read (then every command is refused)
    unreadable: str | None = None
    #: the volume's QoS parameters (:class:`difs.controller.qos.ClientInfo`), None: no QoS
    qos: ClientInfo | None = None

    @classmethod
    def from_meta(cls, meta: Any) -> VolumePolicy:
        extra = meta.extra or {}
        services = problem = None
        if meta.policy:
            try:
                services = PolicyServices.model_validate(meta.policy)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                problem = " ".join(str(exc).split())
        return cls(volume=meta.name, application=str(extra.get("application") or meta.name),
                   version=int(extra.get("policy_version", 0) or 0),
                   requirement=Requirement.from_policy(services), pi_type=meta.pi_type,
                   unreadable=problem,
                   qos=ClientInfo.from_service(services.qos) if services is not None else None)

    @property
    def flags(self) -> int:
        return self.requirement.flags

    @property
    def service_class(self) -> int:
        return self.requirement.service_class

    @property
    def pi_required(self) -> bool:
        return bool(self.requirement.flags & PI)

    @property
    def pi_format_ok(self) -> bool:
        flags = self.requirement.flags
        if not flags & PI:
            return True
        want = 1 if flags & PI_TYPE1 else 3 if flags & PI_TYPE3 else 0
        return self.pi_type == want

    def session_verdict(self, flags: int) -> str | None:
        """The reason every command of a session with ``flags`` is refused, or None."""
        if self.unreadable is not None:
            return "policy_unreadable"
        missing = self.requirement.flags & SESSION_BITS & ~flags
        for bit, reason in _SESSION_REASONS:
            if missing & bit:
                return reason
        if not self.pi_format_ok:
            return "pi_format"
        return None

    def describe(self) -> str:
        return ", ".join(describe_flags(self.requirement.flags)) or "none"


def authentication_of(params: Any) -> str:
    """What a login's authentication did: ``none``, ``chap`` or ``mutual_chap``
    (:class:`difs.policy.services.AuthMethod` values)."""
    if params.auth_method != "CHAP":
        return "none"
    return "mutual_chap" if params.mutual_chap else "chap"


@dataclass(eq=False)
class SessionFacts:
    """What a session's login settled (read from the session, once per login) and the
    CRC32C digest errors its connections met; shared by the session's :class:`IoStats`.

    Sessions that settled the same facts (a re-login of the same path) share one record,
    so its counters only grow."""

    target: str
    initiator: str
    channel: int  #: ISID & FFFFh: the host's channel number
    header_digest: bool
    data_digest: bool
    authentication: str  #: ``none`` / ``chap`` / ``mutual_chap``
    interface: str | None  #: the local address:port the connection arrived on
    digest_errors: int = 0

    @property
    def key(self) -> tuple:
        return (self.target, self.initiator, self.channel, self.header_digest,
                self.data_digest, self.authentication, self.interface)


#: IoStats.counters(): commands, read bytes, write bytes, PI blocks checked, generated,
#: (guard, app, ref) failures, sorted (reason, count) refusals, session digest errors,
#: latency snapshot
Counters = tuple


@dataclass(eq=False)
class IoStats:
    """Live counters of one session (path) x volume; read by the metrics collector and the
    evidence report (:mod:`difs.controller.evidence`)."""

    volume: str
    session: SessionFacts
    commands: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    pi_checked: int = 0  #: blocks whose PI was checked
    pi_generated: int = 0  #: blocks whose PI the controller generated
    pi_failed: dict[str, int] = field(default_factory=lambda: {"guard": 0, "app": 0, "ref": 0})
    rejected: dict[str, int] = field(default_factory=dict)
    #: each command from its arrival (command PDU handled) to its response queued
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)

    @property
    def key(self) -> tuple:
        return (self.volume, *self.session.key)

    @property
    def initiator(self) -> str:
        return self.session.initiator

    @property
    def channel(self) -> int:
        return self.session.channel

    @property
    def header_digest(self) -> bool:
        return self.session.header_digest

    @property
    def data_digest(self) -> bool:
        return self.session.data_digest

    @property
    def digest_bytes(self) -> int:
        """Data bytes of this volume's commands covered by CRC32C data digests."""
        return self.read_bytes + self.write_bytes if self.session.data_digest else 0

    @property
    def labels(self) -> tuple[str, str, str, str, str]:
        s = self.session
        return (self.volume, s.initiator, str(s.channel),
                str(s.header_digest).lower(), str(s.data_digest).lower())

    def counters(self) -> Counters:
        """Every counter now, as one comparable value (see :data:`Counters`)."""
        failed = self.pi_failed
        return (self.commands, self.read_bytes, self.write_bytes, self.pi_checked,
                self.pi_generated, (failed["guard"], failed["app"], failed["ref"]),
                tuple(sorted(self.rejected.items())), self.session.digest_errors,
                self.latency.snapshot())

    def zero(self) -> Counters:
        """The counters of a fresh IoStats."""
        return (0, 0, 0, 0, 0, (0, 0, 0), (), 0, LatencyRecorder().snapshot())


class Guard:
    """The precomputed judgement of one session on one volume (rebuilt when the volume's
    policy or the LUN's logical unit changes)."""

    __slots__ = (
        "checks",
        "deny",
        "lu",
        "pi_required",
        "policy",
        "qos",
        "sense",
        "session",
        "stats",
        "vol_class",
    )

    def __init__(self, lu: Any, policy: VolumePolicy, session_flags: int, stats: IoStats,
                 session: Any) -> None:
        self.lu = lu
        self.policy = policy
        self.deny = policy.session_verdict(session_flags)
        self.vol_class = policy.service_class
        self.pi_required = policy.pi_required
        #: per-command checks are needed at all
        self.checks = bool(self.vol_class or self.pi_required)
        self.stats = stats
        self.session = session
        self.sense = _SENSE
        self.qos = None  #: the volume's QoS client, set by the adapter (None: unscheduled)

    def check(self, cdb) -> str | None:
        """The reason ``cdb`` is refused, or None (the whole per-I/O test)."""
        if self.deny is not None and not describes_only(cdb):
            return self.deny
        if not self.checks:
            return None
        entry = COMMAND_CHECKS.get(cdb[0])
        if entry is None:
            return None
        group_at, protect_needed = entry
        if group_at >= 0:
            tag = cdb[group_at] & 0x3F
            if tag and tag & self.vol_class != self.vol_class:
                return "service_class"
        if protect_needed and self.pi_required and (group_at < 0 or not cdb[1] & 0xE0):
            return "pi_required"
        return None


class Enforcement:
    """Compiled policies of the served volumes and the counters of every session x volume.

    ``register(lu, meta)`` (re)compiles a volume's policy when its version or content
    changes; connections ask :meth:`guard` for their per-LUN :class:`Guard`."""

    def __init__(self) -> None:
        self.policies: dict[Any, VolumePolicy] = {}  # LogicalUnit -> policy
        self._sources: dict[Any, Any] = {}  # LogicalUnit -> (policy dict, version, pi_type)
        self.stats: dict[tuple, IoStats] = {}  # by IoStats.key
        self.sessions: dict[tuple, SessionFacts] = {}  # by SessionFacts.key
        self.volume_rejections: dict[str, dict[str, int]] = {}
        self.luns: dict[str, Any] = {}  # volume name -> LogicalUnit

    def register(self, lu: Any, meta: Any) -> VolumePolicy:
        source = (meta.policy, (meta.extra or {}).get("policy_version"), meta.pi_type,
                  (meta.extra or {}).get("application"))
        current = self.policies.get(lu)
        if current is not None and self._sources.get(lu) == source:
            return current
        policy = VolumePolicy.from_meta(meta)
        self.policies[lu] = policy
        self._sources[lu] = source
        self.luns[meta.name] = lu
        self.volume_rejections.setdefault(meta.name, {})
        log_event(log, "volume policy", volume=meta.name, application=policy.application,
                  version=policy.version, requires=policy.describe(),
                  pi_type=meta.pi_type or "none")
        if policy.unreadable is not None:
            log_event(log, "volume policy unreadable", level=logging.ERROR, volume=meta.name,
                      problem=policy.unreadable,
                      hint="every command to the volume is refused until its policy is fixed")
        if not policy.pi_format_ok:
            log_event(log, "volume not formatted for its policy", level=logging.WARNING,
                      volume=meta.name, pi_type=meta.pi_type or "none",
                      requires=policy.describe(),
                      hint="PI format is fixed when a volume is created; its I/O is refused "
                           "(reason pi_format) until it is recreated")
        return policy

    def unregister(self, lu: Any) -> None:
        policy = self.policies.pop(lu, None)
        self._sources.pop(lu, None)
        if policy is not None and self.luns.get(policy.volume) is lu:
            del self.luns[policy.volume]

    def facts_for(self, session: Any, interface: str | None = None) -> SessionFacts:
        """What ``session``'s login settled (``interface``: the local address:port its
        connection arrived on): the record kept for those facts, or a new one that
        :meth:`keep` keeps once the session addresses a volume or meets a digest error (a
        login alone holds no memory here)."""
        params = session.params
        facts = SessionFacts(session.target_name or "", session.initiator_name,
                             session.isid & 0xFFFF, params.header_digest, params.data_digest,
                             authentication_of(params), interface)
        return self.sessions.get(facts.key, facts)

    def keep(self, facts: SessionFacts) -> SessionFacts:
        """The kept record of ``facts`` (``facts`` itself the first time)."""
        return self.sessions.setdefault(facts.key, facts)

    def stats_for(self, volume: str, session: Any, interface: str | None = None) -> IoStats:
        facts = self.keep(self.facts_for(session, interface))
        key = (volume, *facts.key)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = IoStats(volume, facts)
        return stats

    def guard(self, lu: Any, session: Any, flags: int, interface: str | None = None
              ) -> Guard | None:
        policy = self.policies.get(lu)
        if policy is None:
            return None
        return Guard(lu, policy, flags, self.stats_for(policy.volume, session, interface),
                     session)

    def applications(self) -> dict[str, str]:
        """Volume -> application, for the volumes served now."""
        return {p.volume: p.application for p in list(self.policies.values())}

    def rejected(self, guard: Guard, reason: str, cdb) -> None:
        """Count (per session x volume and per volume) and log a refusal."""
        stats = guard.stats
        count = stats.rejected.get(reason, 0) + 1
        stats.rejected[reason] = count
        per_volume = self.volume_rejections.setdefault(guard.policy.volume, {})
        per_volume[reason] = per_volume.get(reason, 0) + 1
        if _worth_logging(count):
            session = guard.session
            log_event(log, "I/O refused", level=logging.WARNING,
                      application=guard.policy.application, volume=guard.policy.volume,
                      initiator_port=session.initiator_port, channel=session.isid & 0xFFFF,
                      reason=reason, opcode=f"{cdb[0]:02x}", count=count,
                      why=EXPLAIN.get(reason, reason),
                      sense="DATA PROTECT 74h/71h" if reason != "app_tag"
                      else "ABORTED COMMAND 10h/02h")


def _worth_logging(count: int) -> bool:
    """The 1st, 10th, 100th... refusal of a kind on a path (the counters have them all)."""
    while count % 10 == 0:
        count //= 10
    return count == 1
