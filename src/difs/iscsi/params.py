"""What a login settled, as one frozen value both roles share: ``NegotiatedParams``.

While a login runs, ``Negotiator`` (negotiation.py) works in the text keys' own terms: strings and
a dict keyed by key name. When the login reaches Full Feature Phase that result is turned, once,
into a ``NegotiatedParams`` with a typed field for

* the identity: InitiatorName, TargetName, SessionType;
* the security: AuthMethod, the CHAP user and algorithm, mutual CHAP (the target proved itself);
* every operational key (HeaderDigest and DataDigest as booleans, MaxRecvDataSegmentLength as
  declared in each direction, the session-wide keys).

The rules stay in ``KEYS`` (one rule per key): a field here only names the key it comes from
(``_key``) and takes the key's RFC 7143 default. Built from the same exchange, the target and the
initiator hold equal values (the pair tests check it); the target's ``Session`` and
``LoginComplete``, the initiator's ``InitiatorSession`` and both framers take it, and the services
a login offers a path (digests, CHAP) are derived from it in one place,
``difs.policy.fast.NegotiatedServices.from_login``.

Built once per login: the per-I/O path reads plain attributes copied from it, never this value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from .negotiation import KEYS

if TYPE_CHECKING:
    from .negotiation import Negotiator

_DIGEST_ON = "CRC32C"
#: MaxRecvDataSegmentLength until a side declares its own (RFC 7143 13.12)
DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: int = KEYS["MaxRecvDataSegmentLength"].default


def _key(name: str, *, digest: bool = False) -> Any:
    """A field settled by the text key ``name`` (a digest key becomes a boolean: CRC32C on)."""
    default = KEYS[name].default
    return field(default=default == _DIGEST_ON if digest else default,
                 metadata={"key": name, "digest": digest})


class ChapOutcome(Protocol):
    """What the login keeps of a CHAP exchange (``ChapResponder`` and ``ChapRequester``)."""

    user: str
    algorithm: int | None
    mutual: bool


@dataclass(frozen=True, slots=True)
class NegotiatedParams:
    """The result of one login, the same for both roles."""

    # identity
    initiator_name: str
    target_name: str | None  # None in a Discovery session
    session_type: str  # "Normal" or "Discovery"
    # security
    auth_method: str = "None"  # "None" or "CHAP"
    chap_user: str | None = None  # the initiator's CHAP name
    chap_algorithm: int | None = None
    mutual_chap: bool = False  # the target authenticated to the initiator too
    # connection: digests and each direction's receive limit (declarative)
    header_digest: bool = _key("HeaderDigest", digest=True)
    data_digest: bool = _key("DataDigest", digest=True)
    initiator_max_recv_data_segment_length: int = DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH
    target_max_recv_data_segment_length: int = DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH
    # session
    max_connections: int = _key("MaxConnections")
    initial_r2t: bool = _key("InitialR2T")
    immediate_data: bool = _key("ImmediateData")
    max_burst_length: int = _key("MaxBurstLength")
    first_burst_length: int = _key("FirstBurstLength")
    default_time2wait: int = _key("DefaultTime2Wait")
    default_time2retain: int = _key("DefaultTime2Retain")
    max_outstanding_r2t: int = _key("MaxOutstandingR2T")
    data_pdu_in_order: bool = _key("DataPDUInOrder")
    data_sequence_in_order: bool = _key("DataSequenceInOrder")
    error_recovery_level: int = _key("ErrorRecoveryLevel")
    iscsi_protocol_level: int = _key("iSCSIProtocolLevel")
    task_reporting: str = _key("TaskReporting")

    def __post_init__(self) -> None:
        if self.session_type not in ("Normal", "Discovery"):
            raise ValueError(f"SessionType {self.session_type!r} is not Normal or Discovery")
        if self.session_type == "Normal" and not self.target_name:
            raise ValueError("a Normal session names its target")
        if self.auth_method not in ("None", "CHAP"):
            raise ValueError(f"AuthMethod {self.auth_method!r} is not None or CHAP")
        if self.mutual_chap and self.auth_method != "CHAP":
            raise ValueError("mutual CHAP without AuthMethod=CHAP")
        if self.first_burst_length > self.max_burst_length:
            raise ValueError(f"FirstBurstLength {self.first_burst_length} exceeds "
                             f"MaxBurstLength {self.max_burst_length}")

    @classmethod
    def from_login(cls, negotiator: Negotiator, *, initiator_name: str, target_name: str | None,
                   session_type: str, auth_method: str,
                   chap: ChapOutcome | None = None) -> NegotiatedParams:
        """The value of a finished login: ``negotiator``'s results (either role) and the
        identity and security the login code settled."""
        values = negotiator.values
        settled = {name: values[key] == _DIGEST_ON if digest else values[key]
                   for name, key, digest in _SETTLED}
        own = negotiator.local.get("MaxRecvDataSegmentLength",
                                   DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH)
        peer = negotiator.peer_declared.get("MaxRecvDataSegmentLength",
                                            DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH)
        initiator_limit, target_limit = (own, peer) if negotiator.role == "initiator" else (
            peer, own)
        used = chap if auth_method == "CHAP" else None
        return cls(initiator_name=initiator_name, target_name=target_name,
                   session_type=session_type, auth_method=auth_method,
                   chap_user=None if used is None else used.user,
                   chap_algorithm=None if used is None else used.algorithm,
                   mutual_chap=used is not None and used.mutual,
                   initiator_max_recv_data_segment_length=initiator_limit,
                   target_max_recv_data_segment_length=target_limit, **settled)

    def key_values(self) -> dict[str, Any]:
        """The settled keys in ``Negotiator.values`` form (a further connection of the session
        starts its negotiation from them)."""
        out = {}
        for name, key, digest in _SETTLED:
            value = getattr(self, name)
            out[key] = (_DIGEST_ON if value else "None") if digest else value
        return out

    def receive_limit(self, role: str) -> int:
        """The largest data segment ``role`` ("initiator" or "target") accepts: its own
        declaration."""
        if role == "initiator":
            return self.initiator_max_recv_data_segment_length
        return self.target_max_recv_data_segment_length

    def send_limit(self, role: str) -> int:
        """The largest data segment ``role`` may send: what its peer declared."""
        return self.receive_limit("target" if role == "initiator" else "initiator")


#: (field, key, digest) for every field a negotiated key settles
_SETTLED: tuple[tuple[str, str, bool], ...] = tuple(
    (f.name, f.metadata["key"], f.metadata["digest"])
    for f in fields(NegotiatedParams) if "key" in f.metadata)
