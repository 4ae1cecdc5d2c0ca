"""Operational text negotiation (RFC 7143 6.2 and chapter 13): every key and its rule.

Each key is described once in ``KEYS`` by a ``KeyDef``: how its result is computed (``Rule``), its
range or allowed values, its default, who may send it and whether it is irrelevant in Discovery
sessions. ``Negotiator`` applies those rules for one connection, in either role:

* as **responder**, ``respond(offers)`` answers the peer's ``key=value`` offers and records the
  results (list: first of the offerer's values that we accept; min/max of the numbers; AND/OR of
  booleans; declaratives are recorded and not answered; unknown keys get ``NotUnderstood``; values
  out of range or of bad syntax get ``Reject``; keys that do not apply get ``Irrelevant``);
* as **originator**, ``offer(keys)`` produces our proposals and ``accept(responses)`` checks the
  peer's answers against the rules (a response that violates them raises ``TextError``).

Identity and security keys (InitiatorName, TargetName, SessionType, AuthMethod, CHAP_*) are
handled by the login code; ``Negotiator`` only knows their definitions for phase checks.

``proposals(config, ...)`` gives both roles' local values from their configuration; a finished
login's results become one typed ``NegotiatedParams`` (params.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from .errors import TextError
from .text import IRRELEVANT, NOT_UNDERSTOOD, REJECT, pull_number


class Rule(Enum):
    LIST = "list"  # result: first value of the offerer's list acceptable to the responder
    MIN = "min"  # numerical, result is the minimum
    MAX = "max"  # numerical, result is the maximum
    AND = "and"  # boolean, result is offer AND responder's value
    OR = "or"  # boolean, result is offer OR responder's value
    DECLARATIVE = "declarative"  # each side states its own value; no response


class Use(Enum):
    LEADING_ONLY = "LO"  # session-wide, leading connection's login only
    INITIALIZE_ONLY = "IO"  # during login only
    ALL = "ALL"  # login and full feature phase
    FULL_FEATURE = "FFP"  # full feature phase only
    SECURITY = "SEC"  # security negotiation stage only


@dataclass(frozen=True, slots=True)
class KeyDef:
    name: str
    rule: Rule
    use: Use
    default: Any
    low: int = 0
    high: int = 0
    values: tuple[str, ...] = ()
    sender: str = "IT"  # who may send it: "I", "T" or both
    discovery_irrelevant: bool = False
    numeric: bool = False

    def parse(self, raw: str) -> Any:
        """Python value of a single offered value (raises TextError when invalid)."""
        if self.numeric:
            number = pull_number(raw)
            if not self.low <= number <= self.high:
                raise TextError(f"{self.name}={raw} out of range {self.low}..{self.high}")
            return number
        if self.rule in (Rule.AND, Rule.OR):
            if raw not in ("Yes", "No"):
                raise TextError(f"{self.name}={raw} is not Yes/No")
            return raw == "Yes"
        if self.values and raw not in self.values:
            raise TextError(f"{self.name}={raw} is not one of {self.values}")
        return raw

    def format(self, value: Any) -> str:
        if isinstance(value, bool):
            return "Yes" if value else "No"
        return str(value)


_N24 = (1 << 24) - 1


def _num(name, rule, default, low, high, use=Use.LEADING_ONLY, **kw) -> KeyDef:
    return KeyDef(name, rule, use, default, low, high, numeric=True, **kw)


def _bool(name, rule, default, **kw) -> KeyDef:
    return KeyDef(name, rule, Use.LEADING_ONLY, default, **kw)


KEYS: dict[str, KeyDef] = {k.name: k for k in (
    KeyDef("HeaderDigest", Rule.LIST, Use.INITIALIZE_ONLY, "None", values=("None", "CRC32C")),
    KeyDef("DataDigest", Rule.LIST, Use.INITIALIZE_ONLY, "None", values=("None", "CRC32C")),
    KeyDef("AuthMethod", Rule.LIST, Use.SECURITY, "None",
           values=("None", "CHAP", "KRB5", "SRP", "SPKM1", "SPKM2")),
    _num("MaxConnections", Rule.MIN, 1, 1, 65535, discovery_irrelevant=True),
    KeyDef("SendTargets", Rule.DECLARATIVE, Use.FULL_FEATURE, "", sender="I"),
    KeyDef("TargetName", Rule.DECLARATIVE, Use.INITIALIZE_ONLY, ""),
    KeyDef("InitiatorName", Rule.DECLARATIVE, Use.INITIALIZE_ONLY, "", sender="I"),
    KeyDef("TargetAlias", Rule.DECLARATIVE, Use.ALL, "", sender="T"),
    KeyDef("InitiatorAlias", Rule.DECLARATIVE, Use.ALL, "", sender="I"),
    KeyDef("TargetAddress", Rule.DECLARATIVE, Use.ALL, "", sender="T"),
    _num("TargetPortalGroupTag", Rule.DECLARATIVE, 1, 0, 65535, use=Use.INITIALIZE_ONLY,
         sender="T"),
    _bool("InitialR2T", Rule.OR, True, discovery_irrelevant=True),
    _bool("ImmediateData", Rule.AND, True, discovery_irrelevant=True),
    _num("MaxRecvDataSegmentLength", Rule.DECLARATIVE, 8192, 512, _N24, use=Use.ALL),
    _num("MaxBurstLength", Rule.MIN, 262144, 512, _N24, discovery_irrelevant=True),
    _num("FirstBurstLength", Rule.MIN, 65536, 512, _N24, discovery_irrelevant=True),
    _num("DefaultTime2Wait", Rule.MAX, 2, 0, 3600),
    _num("DefaultTime2Retain", Rule.MIN, 20, 0, 3600),
    _num("MaxOutstandingR2T", Rule.MIN, 1, 1, 65535, discovery_irrelevant=True),
    _bool("DataPDUInOrder", Rule.OR, True, discovery_irrelevant=True),
    _bool("DataSequenceInOrder", Rule.OR, True, discovery_irrelevant=True),
    _num("ErrorRecoveryLevel", Rule.MIN, 0, 0, 2),
    KeyDef("SessionType", Rule.DECLARATIVE, Use.LEADING_ONLY, "Normal",
           values=("Discovery", "Normal"), sender="I"),
    # RFC 7144
    _num("iSCSIProtocolLevel", Rule.MIN, 0, 0, 31),
    KeyDef("TaskReporting", Rule.LIST, Use.LEADING_ONLY, "RFC3720",
           values=("RFC3720", "ResponseFence", "FastAbort")),
)}

# Keys obsoleted by RFC 7143 (13.26): answer markers with "No", marker intervals with "Reject".
OBSOLETE_MARKERS = {"OFMarker": "No", "IFMarker": "No", "OFMarkInt": REJECT, "IFMarkInt": REJECT}

# Keys the login layer consumes itself.
LOGIN_KEYS = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias",
                        "AuthMethod", "SendTargets"})

# Operational keys as proposed by difs (both roles), with RFC 7143 defaults where they are fine.
# ErrorRecoveryLevel is always 0: difs recovers by reconnecting and re-sending on another path.
OPERATIONAL_KEYS = ("HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T",
                    "ImmediateData", "MaxRecvDataSegmentLength", "MaxBurstLength",
                    "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain",
                    "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
                    "ErrorRecoveryLevel")


class Proposing(Protocol):
    """The session parameters a side proposes: ``PortalConfig`` and ``InitiatorConfig``."""

    max_connections: int
    initial_r2t: bool
    immediate_data: bool
    max_recv_data_segment_length: int
    max_burst_length: int
    first_burst_length: int
    default_time2wait: int
    default_time2retain: int
    max_outstanding_r2t: int


def proposals(config: Proposing, *, header_digest: tuple[str, ...],
              data_digest: tuple[str, ...]) -> dict[str, Any]:
    """Our values of the operational keys (``Negotiator.local``), the same set for both roles:
    the digests acceptable in preference order and ``config``'s session parameters."""
    return {
        "HeaderDigest": header_digest,
        "DataDigest": data_digest,
        "MaxConnections": config.max_connections,
        "InitialR2T": config.initial_r2t,
        "ImmediateData": config.immediate_data,
        "MaxRecvDataSegmentLength": config.max_recv_data_segment_length,
        "MaxBurstLength": config.max_burst_length,
        "FirstBurstLength": config.first_burst_length,
        "DefaultTime2Wait": config.default_time2wait,
        "DefaultTime2Retain": config.default_time2retain,
        "MaxOutstandingR2T": config.max_outstanding_r2t,
        "DataPDUInOrder": True,
        "DataSequenceInOrder": True,
        "ErrorRecoveryLevel": 0,
    }


def defaults() -> dict[str, Any]:
    return {name: key.default for name, key in KEYS.items()}


class Negotiator:
    """Negotiation state of one connection.

    ``local`` holds our own values: for list keys a tuple of acceptable values in preference
    order, for numbers our limit (min keys) or our wish (max keys), for booleans our wish, for
    declaratives what we declare. ``values`` holds the results so far (RFC defaults until
    negotiated). ``peer_declared`` collects the peer's declarative keys (e.g. its
    MaxRecvDataSegmentLength) separately from ours.
    """

    def __init__(self, *, role: str, local: dict[str, Any], discovery: bool = False) -> None:
        if role not in ("initiator", "target"):
            raise ValueError(role)
        self.role = role
        self.local = local
        self.discovery = discovery
        self.values: dict[str, Any] = defaults()
        self.peer_declared: dict[str, Any] = {}
        self._seen: set[str] = set()  # keys the peer offered/declared during this negotiation
        self._offered: dict[str, Any] = {}  # our outstanding offers

    @property
    def peer(self) -> str:
        return "T" if self.role == "initiator" else "I"

    # -- responder ------------------------------------------------------------------------------

    def respond(self, offers: list[tuple[str, str]], *, full_feature: bool = False
                ) -> list[tuple[str, str]]:
        """Answers for the peer's offers (declaratives are recorded and not answered).

        A key offered twice in one negotiation raises ``TextError`` (RFC 7143 6.2: initiator
        error in login). Offers that answer our own outstanding offers are handled by
        ``accept`` and skipped here.
        """
        answers: list[tuple[str, str]] = []
        # MaxBurstLength is settled before FirstBurstLength, which may not exceed it.
        for name, raw in sorted(offers, key=lambda pair: pair[0] == "FirstBurstLength"):
            if name in self._offered:
                continue  # a response to our offer, see accept()
            if name in self._seen and name != "TargetAddress":
                raise TextError(f"key {name} negotiated twice")
            self._seen.add(name)
            answer = self._answer(name, raw, full_feature)
            if answer is not None:
                answers.append((name, answer))
        return answers

    def _answer(self, name: str, raw: str, full_feature: bool) -> str | None:
        if name in OBSOLETE_MARKERS:
            return OBSOLETE_MARKERS[name]
        key = KEYS.get(name)
        if key is None:
            return NOT_UNDERSTOOD
        if self.peer not in key.sender:
            return REJECT
        if full_feature and key.use not in (Use.ALL, Use.FULL_FEATURE):
            return REJECT
        if self.discovery and key.discovery_irrelevant:
            return IRRELEVANT
        if key.rule is Rule.DECLARATIVE:
            try:
                self.peer_declared[name] = key.parse(raw)
            except TextError:
                return REJECT
            return None
        if key.rule is Rule.LIST:
            acceptable = self.local.get(name, (key.default,))
            for candidate in raw.split(","):
                if candidate in acceptable and (not key.values or candidate in key.values):
                    self.values[name] = candidate
                    return candidate
            return REJECT
        try:
            offered = key.parse(raw)
        except TextError:
            return REJECT
        mine = self.local.get(name, key.default)
        if key.rule is Rule.MIN:
            result = min(offered, mine)
            if name == "FirstBurstLength":
                result = min(result, self.values["MaxBurstLength"])
        elif key.rule is Rule.MAX:
            result = max(offered, mine)
        elif key.rule is Rule.AND:
            result = offered and mine
        else:  # Rule.OR
            result = offered or mine
        self.values[name] = result
        return key.format(result)

    # -- originator ----------------------------------------------------------------------------

    def offer(self, names: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
        """Our proposals/declarations for ``names`` (taken from ``local``)."""
        out = []
        for name in names:
            key = KEYS[name]
            if name not in self.local:
                continue
            if self.discovery and key.discovery_irrelevant:
                continue
            mine = self.local[name]
            if key.rule is Rule.LIST:
                text = ",".join(mine)
            else:
                text = key.format(mine)
            if key.rule is not Rule.DECLARATIVE:
                self._offered[name] = mine
            out.append((name, text))
        return out

    @property
    def awaiting(self) -> bool:
        """True while some of our offers have not been answered."""
        return bool(self._offered)

    def accept(self, responses: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Apply the peer's answers to our offers; return the other pairs (the peer's own
        offers and declarations, for ``respond``)."""
        rest = []
        for name, raw in responses:
            if name not in self._offered:
                rest.append((name, raw))
                continue
            mine = self._offered.pop(name)
            key = KEYS[name]
            if raw in (REJECT, IRRELEVANT, NOT_UNDERSTOOD):
                self.values[name] = key.default
                continue
            if key.rule is Rule.LIST:
                if raw not in mine:
                    raise TextError(f"{name}={raw} was not among the offered {mine}")
                self.values[name] = raw
                continue
            value = key.parse(raw)
            if key.rule is Rule.MIN and value > mine:
                raise TextError(f"{name}={value} answered above the offered minimum {mine}")
            if key.rule is Rule.MAX and value < mine:
                raise TextError(f"{name}={value} answered below the offered maximum {mine}")
            if key.rule is Rule.AND and value and not mine:
                raise TextError(f"{name}=Yes answered to an AND offer of No")
            if key.rule is Rule.OR and not value and mine:
                raise TextError(f"{name}=No answered to an OR offer of Yes")
            self.values[name] = value
        return rest

    def finish(self) -> None:
        """Check cross-key rules once the stage is over (FirstBurstLength <= MaxBurstLength)."""
        if self.values["FirstBurstLength"] > self.values["MaxBurstLength"]:
            raise TextError(f"FirstBurstLength {self.values['FirstBurstLength']} exceeds "
                            f"MaxBurstLength {self.values['MaxBurstLength']}")
