"""Hypothesis over login state x input for the target core (state.py table + target_login.py).

Each example is a sequence of steps fed to a fresh ``TargetConnection``, one step per
``receive_data`` (or ``handle_timer``): login requests built from a valid login script (operational
only, security None, CHAP, Discovery, continued text, header digests, joining an existing
session) with random mutations (CSG/NSG/T/C bits, ISID, TSIH, CID, version, keys dropped or
added, garbage text, truncation) and random steps inserted anywhere (login requests with random
stages and keys, non-login PDUs, target opcodes, oversized segments, raw bytes, timers).

Invariants checked after every step (h11's rule and the state table's):

* nothing escapes ``receive_data`` / ``handle_timer`` / ``close`` (the core turns every fault of
  the peer into a PDU and events);
* every byte sent frames into well-formed target PDUs that decode and re-encode identically;
  during login only Login Responses go out, their StatSN counts up by one, a whole request gets
  its own ITT back;
* the state moves only along ``TARGET_TRANSITIONS`` (at most two transitions per PDU: the stage
  PDU and the transit it earns), and a terminal state never changes;
* a Login Response with a non-zero status class ends the connection: ``LoginRejected`` and
  ``ConnectionClosed`` events, no byte more, whatever follows;
* a login that reached Full Feature Phase has a TSIH, negotiated values equal to what RFC 7143's
  rules give for the keys offered (checked by an independent model), FirstBurstLength <=
  MaxBurstLength, the digests its target requires, and a correct CHAP response when its target
  requires CHAP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import event as outcome
from hypothesis import strategies as st

from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.events import (
    TARGET_EVENTS,
    ConnectionClosed,
    LoginComplete,
    LoginRejected,
    ScsiTask,
    TaskManagementRequest,
)
from difs.iscsi.framer import PduFramer
from difs.iscsi.pdu import (
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    NopIn,
    NopOut,
    ScsiCommand,
    SnackRequest,
    TaskMgmtRequest,
    TextRequest,
    encode_pdu,
    pull_pdu,
)
from difs.iscsi.session import SessionTable
from difs.iscsi.state import TARGET_LOGIN_STATES, TARGET_TRANSITIONS, TERMINAL, Input, State
from difs.iscsi.target_connection import TargetConnection
from difs.iscsi.text import pull_text

TARGET = "iqn.2024-01.org.difs:t"
SECURE = "iqn.2024-01.org.difs:chap"
HD_TARGET = "iqn.2024-01.org.difs:hd"
INITIATOR = "iqn.2024-01.org.difs:i"
USER, SECRET = "u", "secret-secret-1"
ISID_A, ISID_B = 0x400001370000, 0x400001370001
CHALLENGE_BYTE = 0x5A  # the portal's "random" bytes: CHAP_I=90, CHAP_C=5a5a...


def fixed_random(n: int) -> bytes:
    return bytes([CHALLENGE_BYTE]) * n


def chap_r(algorithm: int, name: str = {5: "md5", 7: "sha256"}.__getitem__) -> str:
    size = hashlib.new(name(algorithm)).digest_size
    digest = hashlib.new(name(algorithm), bytes([CHALLENGE_BYTE]) + SECRET.encode()
                         + fixed_random(max(16, size))).digest()
    return "0x" + digest.hex()


GOOD_CHAP_R = {chap_r(5), chap_r(7)}


def make_portal() -> PortalConfig:
    targets = {
        TARGET: TargetConfig(name=TARGET),
        SECURE: TargetConfig(name=SECURE, chap=ChapCredentials(USER, SECRET)),
        HD_TARGET: TargetConfig(name=HD_TARGET, require_header_digest=True),
    }
    return PortalConfig(addresses=["127.0.0.1:3260"], targets=targets, first_burst_length=65536,
                        max_burst_length=262144, max_recv_data_segment_length=65536,
                        chap_algorithms=(7, 5), random_bytes=fixed_random)


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """One Login Request; ``text`` is its data segment."""

    text: bytes
    csg: int = 1
    nsg: int = 3
    transit: bool = True
    cont: bool = False
    isid: int = ISID_A
    tsih: int = 0
    cid: int = 1
    itt: int = 7
    version_min: int = 0

    def wire(self) -> bytes:
        return encode_pdu(LoginRequest(isid=self.isid, tsih=self.tsih, itt=self.itt, cid=self.cid,
                                       cmdsn=20, expstatsn=100, csg=self.csg, nsg=self.nsg,
                                       transit=self.transit, cont=self.cont,
                                       version_min=self.version_min, data=self.text))


@dataclass(frozen=True)
class Raw:
    """Bytes that are not one whole PDU (truncated, garbage, oversized...)."""

    data: bytes


@dataclass(frozen=True)
class Other:
    """A whole non-login PDU."""

    data: bytes
    itt: int


@dataclass(frozen=True)
class Timer:
    seconds: float


def text(*pairs: tuple[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\x00" for k, v in pairs)


IDENTITY = (("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", TARGET))
OPS = (("HeaderDigest", "None,CRC32C"), ("DataDigest", "None"), ("InitialR2T", "No"),
       ("ImmediateData", "Yes"), ("MaxBurstLength", "262144"), ("FirstBurstLength", "65536"),
       ("MaxRecvDataSegmentLength", "262144"))


def identity(target: str = TARGET, session_type: str = "Normal") -> tuple:
    pairs = [("InitiatorName", INITIATOR), ("SessionType", session_type)]
    if session_type == "Normal":
        pairs.append(("TargetName", target))
    return tuple(pairs)


#: valid login scripts
TEMPLATES: dict[str, list[Login]] = {
    "operational": [Login(text(*IDENTITY, *OPS))],
    "security-none": [Login(text(*IDENTITY, ("AuthMethod", "None")), csg=0, nsg=1),
                      Login(text(*OPS))],
    "security-to-ffp": [Login(text(*IDENTITY, ("AuthMethod", "None")), csg=0, nsg=3)],
    "chap": [Login(text(*identity(SECURE), ("AuthMethod", "CHAP,None")), csg=0, nsg=1),
             Login(text(("CHAP_A", "5")), csg=0, nsg=1, transit=False),
             Login(text(("CHAP_N", USER), ("CHAP_R", chap_r(5))), csg=0, nsg=1),
             Login(text(*OPS))],
    "chap-sha256": [Login(text(*identity(SECURE), ("AuthMethod", "CHAP")), csg=0, nsg=1,
                          transit=False),
                    Login(text(("CHAP_A", "7,5")), csg=0, nsg=1, transit=False),
                    Login(text(("CHAP_N", USER), ("CHAP_R", chap_r(7))), csg=0, nsg=3)],
    "discovery": [Login(text(*identity(session_type="Discovery"), *OPS))],
    "header-digest": [Login(text(*identity(HD_TARGET), ("HeaderDigest", "CRC32C,None"),
                                 ("DataDigest", "None")))],
    "continued": [Login(text(*IDENTITY, *OPS)[:40], transit=False, cont=True),
                  Login(text(*IDENTITY, *OPS)[40:])],
    "join-existing": [Login(text(*IDENTITY, *OPS), tsih=1, cid=1)],
}

PAIR_POOL = [
    *[("InitiatorName", v) for v in (INITIATOR, "", "iqn.2024-01.org.difs:j")],
    *[("TargetName", v) for v in (TARGET, SECURE, HD_TARGET, "iqn.nope:x", "")],
    *[("SessionType", v) for v in ("Normal", "Discovery", "Weird")],
    ("InitiatorAlias", "alias"),
    *[("AuthMethod", v) for v in ("None", "CHAP", "CHAP,None", "None,CHAP", "KRB5", "", "x")],
    *[("CHAP_A", v) for v in ("5", "7", "5,7", "99", "zz", "")],
    ("CHAP_N", USER), ("CHAP_N", "mallory"),
    *[("CHAP_R", v) for v in (chap_r(5), chap_r(7), "0x00", "junk")],
    ("CHAP_I", "3"), ("CHAP_C", "0x0102"), ("CHAP_C", "0x" + fixed_random(16).hex()),
    *[("HeaderDigest", v) for v in ("None", "CRC32C", "CRC32C,None", "None,CRC32C", "Bogus")],
    *[("DataDigest", v) for v in ("None", "CRC32C", "CRC32C,None", "Bogus")],
    *[("MaxBurstLength", v) for v in ("512", "4096", "262144", "16777215", "16777216", "0",
                                      "abc")],
    *[("FirstBurstLength", v) for v in ("512", "8192", "65536", "262144", "16777216", "abc")],
    *[("ImmediateData", v) for v in ("Yes", "No", "Maybe")],
    *[("InitialR2T", v) for v in ("Yes", "No", "x")],
    *[("MaxRecvDataSegmentLength", v) for v in ("512", "8192", "262144", "1", "x")],
    *[("MaxConnections", v) for v in ("1", "2", "0")],
    *[("ErrorRecoveryLevel", v) for v in ("0", "2", "3")],
    ("X-com.example.key", "v"), ("IFMarker", "No"), ("OFMarkInt", "1~2"), ("TargetAlias", "a"),
    ("SendTargets", "All"), ("DefaultTime2Wait", "2"), ("MaxOutstandingR2T", "1"),
]

garbage_text = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"novalue\x00", b"=value\x00", b"A=1", b"\xff\xfe=\x00", b"\x00\x00",
                     b"A=" + b"x" * 300 + b"\x00", b"InitiatorName=" + INITIATOR.encode()]))
pairs_text = st.lists(st.sampled_from(PAIR_POOL), max_size=7).map(lambda p: text(*p))

random_login = st.builds(
    Login,
    text=st.one_of(pairs_text, pairs_text, garbage_text),
    csg=st.sampled_from([0, 0, 1, 1, 2, 3]), nsg=st.integers(0, 3), transit=st.booleans(),
    cont=st.sampled_from([False, False, True]), isid=st.sampled_from([ISID_A, ISID_B]),
    tsih=st.sampled_from([0, 0, 1, 999]), cid=st.sampled_from([1, 1, 2]),
    itt=st.integers(0, 0xFFFFFFFF), version_min=st.sampled_from([0, 0, 0, 1]))

OTHER_PDUS = [
    NopOut(itt=3, cmdsn=20, immediate=True, data=b"ping"),
    NopOut(ttt=1, itt=0xFFFFFFFF),
    ScsiCommand(itt=4, cdb=b"\x28" + bytes(9), read=True, expected_length=512, cmdsn=20),
    ScsiCommand(itt=5, cdb=b"\x2a" + bytes(9), write=True, expected_length=512, cmdsn=21,
                data=bytes(512)),
    DataOut(itt=5, offset=0, final=True, data=bytes(512)),
    TextRequest(itt=6, cmdsn=20, immediate=True, data=b"SendTargets=All\x00"),
    TaskMgmtRequest(function=5, itt=8, cmdsn=20),
    TaskMgmtRequest(function=1, itt=9, referenced_itt=4, cmdsn=20),
    LogoutRequest(itt=10, cmdsn=20, immediate=True),
    SnackRequest(itt=4),
    NopIn(itt=11),  # a target opcode sent by the initiator
    LoginResponse(itt=12),
]
other_pdu = st.sampled_from(OTHER_PDUS).map(lambda p: Other(encode_pdu(p), p.itt))

raw_step = st.one_of(
    st.binary(min_size=1, max_size=120).map(Raw),
    # a BHS announcing a data segment beyond the 8 KiB login limit
    st.just(Raw(bytes([0x43, 0x87, 0, 0, 0, 0x00, 0x23, 0x28]) + bytes(40))),
    # an unknown initiator opcode
    st.just(Raw(bytes([0x1C, 0x80]) + bytes(46))),
)
timer_step = st.sampled_from([0.5, 10.0, 31.0]).map(Timer)
random_step = st.one_of(random_login, random_login, other_pdu, raw_step, timer_step)

FIELD_MUTATIONS = {
    "csg": st.integers(0, 3), "nsg": st.integers(0, 3), "transit": st.booleans(),
    "cont": st.booleans(), "isid": st.sampled_from([ISID_A, ISID_B]),
    "tsih": st.sampled_from([0, 1, 999]), "cid": st.sampled_from([1, 2]),
    "version_min": st.just(1), "text": st.one_of(pairs_text, garbage_text),
}


@st.composite
def mutated(draw, step: Login):
    kind = draw(st.sampled_from([None] * 14 + [*FIELD_MUTATIONS, "add", "drop", "truncate"]))
    if kind is None:
        return step
    if kind == "truncate":
        wire = step.wire()
        return Raw(wire[:draw(st.integers(1, len(wire) - 1))])
    if kind == "add":
        return replace(step, text=step.text + text(draw(st.sampled_from(PAIR_POOL))))
    if kind == "drop":
        pairs = [p for p in step.text.split(b"\x00") if p]
        if pairs:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        return replace(step, text=b"".join(p + b"\x00" for p in pairs))
    return replace(step, **{kind: draw(FIELD_MUTATIONS[kind])})


@st.composite
def scenarios(draw):
    name = draw(st.sampled_from(sorted(TEMPLATES)))
    steps = [draw(mutated(step)) for step in TEMPLATES[name]]
    for _ in range(draw(st.integers(0, 3))):
        steps.insert(draw(st.integers(0, len(steps))), draw(random_step))
    if draw(st.booleans()):  # and a few steps after the login
        steps += draw(st.lists(st.one_of(other_pdu, random_login), max_size=3))
    existing = name == "join-existing" or draw(st.integers(0, 4)) == 0
    return name, existing, steps


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------

#: states one PDU may lead to: the stage input, then possibly the transit it earns
_FROM_INPUTS = {i for i in Input if i is not Input.TRANSPORT_LOST}


def _successors(state: State) -> set[State]:
    return {TARGET_TRANSITIONS[(state, i)] for i in _FROM_INPUTS
            if (state, i) in TARGET_TRANSITIONS}


MOVES = {s: {n for m in _successors(s) for n in _successors(m)} | _successors(s) for s in State}


def expected_params(offers: dict[str, str], portal: PortalConfig, target: TargetConfig | None,
                    discovery: bool) -> dict:
    """RFC 7143's results for the keys offered (an oracle independent of negotiation.py)."""
    def number(key: str, default: int, *limits: int) -> int:
        raw = offers.get(key, "")
        if discovery or not raw.isdigit() or not 512 <= int(raw) <= (1 << 24) - 1:
            return default
        return min(int(raw), *limits)

    def boolean(key: str, combine, mine: bool) -> bool:
        raw = offers.get(key)
        if discovery or raw not in ("Yes", "No"):
            return True
        return combine(raw == "Yes", mine)

    def digest(key: str, required: bool) -> str:
        acceptable = ("CRC32C",) if required else ("CRC32C", "None")
        offered = offers.get(key)
        if offered is None:
            return "None"
        return next((v for v in offered.split(",") if v in acceptable), "None")

    mbl = number("MaxBurstLength", 262144, portal.max_burst_length)
    return {
        "max_burst_length": mbl,
        "first_burst_length": number("FirstBurstLength", 65536, portal.first_burst_length, mbl),
        "immediate_data": boolean("ImmediateData", lambda a, b: a and b, portal.immediate_data),
        "initial_r2t": boolean("InitialR2T", lambda a, b: a or b, portal.initial_r2t),
        "header_digest": digest("HeaderDigest", bool(target and target.require_header_digest))
        == "CRC32C",
        "data_digest": digest("DataDigest", bool(target and target.require_data_digest))
        == "CRC32C",
    }


ALLOWED_EVENTS = TARGET_EVENTS


class Checker:
    """Feeds steps to one connection and checks every invariant after each."""

    def __init__(self, conn: TargetConnection, portal: PortalConfig, *,
                 note=lambda _what: None) -> None:
        self.conn = conn
        self.note = note  # hypothesis.event inside a hypothesis test
        self.portal = portal
        self.now = 0.0
        self.framer = PduFramer((1 << 24) - 1)
        self.statsn: int | None = None
        self.fed: list[object] = []  # steps fed while logging in
        self.closes = 0
        self.aligned = True  # no partial PDU fed so far: each whole PDU is framed as sent

    def feed(self, step: object) -> None:
        conn = self.conn
        before, was_closed = conn.state, conn.closed
        if isinstance(step, Timer):
            self.now += step.seconds
            conn.handle_timer(self.now)
        else:
            if before in TARGET_LOGIN_STATES:
                self.fed.append(step)
            conn.receive_data(step.wire() if isinstance(step, Login) else step.data)
            self.aligned = self.aligned and not isinstance(step, Raw)
        after = conn.state
        assert after is before or after in MOVES[before], (before, after, step)
        if before in TERMINAL:
            assert after is before
        events = self._events()  # answers the tasks first: their replies go out now too
        replies = self._replies()
        if was_closed:
            assert replies == [] and events == [] and after is before
            return
        if before in TARGET_LOGIN_STATES:
            self._check_login_replies(step, replies, events)
        if conn.closed:
            assert self.closes == 1 or after is State.LOGGED_OUT
        assert self.closes <= 1

    def _replies(self) -> list:
        self.framer.feed(b"".join(bytes(c) for c in self.conn.data_to_send()))
        out = []
        while (framed := self.framer.next_pdu()) is not None:
            assert framed.opcode >= 0x20 and not framed.immediate
            pdu = pull_pdu(framed.header, framed.ahs, framed.data)
            assert encode_pdu(pdu)[:48] == bytes(framed.header)
            out.append(pdu)
            if isinstance(pdu, LoginResponse) and pdu.status_class == 0 and pdu.transit \
                    and pdu.nsg == 3:  # Full Feature Phase: digests from the next PDU on
                keys = dict(pull_text(pdu.data))
                self.framer.header_digest = keys.get("HeaderDigest") == "CRC32C"
                self.framer.data_digest = keys.get("DataDigest") == "CRC32C"
        assert self.framer.buffered == 0  # the core only ever sends whole PDUs
        return out

    def _events(self) -> list:
        out = []
        while (event := self.conn.next_event()) is not None:
            assert isinstance(event, ALLOWED_EVENTS), event
            out.append(event)
            if isinstance(event, ConnectionClosed):
                self.closes += 1
            elif isinstance(event, LoginComplete):
                self._check_login_complete(event)
            elif isinstance(event, ScsiTask):
                self.conn.complete_command(event, status=0,
                                           data_in=bytes(event.expected_length if event.read
                                                         else 0))
            elif isinstance(event, TaskManagementRequest):
                self.conn.complete_task_management(event, response=0)
        return out

    def _check_login_replies(self, step: object, replies: list, events: list) -> None:
        conn = self.conn
        ffp_from = next((i for i, r in enumerate(replies) if isinstance(r, LoginResponse)
                         and r.status_class == 0 and r.transit and r.nsg == 3), None)
        login_replies = replies if ffp_from is None else replies[:ffp_from + 1]
        for reply in login_replies:
            assert isinstance(reply, LoginResponse), reply
            assert reply.version_max == reply.version_active == 0
            if self.statsn is not None:
                assert reply.statsn == (self.statsn + 1) & 0xFFFFFFFF
            self.statsn = reply.statsn
            if isinstance(step, (Login, Other)) and self.aligned and len(login_replies) == 1:
                assert reply.itt == step.itt
            if reply.status_class != 0:
                assert reply.status_class in (2, 3) and not reply.transit
                assert reply is replies[-1] and conn.closed
                assert conn.state in (State.LOGIN_FAILED, State.CLOSED)
                assert any(isinstance(e, LoginRejected) for e in events)
                assert isinstance(events[-1], ConnectionClosed)
            elif reply.transit:
                assert reply.nsg in (1, 3) and reply.nsg > reply.csg
            else:
                assert reply.nsg == 0
        if ffp_from is not None:
            final = replies[ffp_from]
            assert final.tsih != 0 and conn.state in (State.FULL_FEATURE, State.LOGGED_OUT) \
                or conn.closed
            assert any(isinstance(e, LoginComplete) for e in events)

    def _check_login_complete(self, event: LoginComplete) -> None:
        session = event.session
        assert self.conn.state is State.FULL_FEATURE and session.tsih != 0
        assert 512 <= session.first_burst_length <= session.max_burst_length < 1 << 24
        assert session.max_burst_length <= self.portal.max_burst_length
        target = self.portal.targets.get(session.target_name) if session.target_name else None
        if target is not None and target.require_header_digest:
            assert session.params.header_digest and self.conn.header_digest
        logins = [s for s in self.fed if isinstance(s, Login)]
        if target is not None and target.chap is not None:
            offered = [dict(pull_text(s.text)) for s in logins if s.csg == 0 and s.text
                       and s.text.endswith(b"\x00")]
            assert any(k.get("CHAP_R") in GOOD_CHAP_R and k.get("CHAP_N") == USER
                       for k in offered), "CHAP target reached Full Feature Phase unauthenticated"
            self.note("CHAP login completed")
        if not all(isinstance(s, Login) for s in self.fed) or logins[0].tsih != 0:
            return  # the byte stream is not just whole logins, or the session existed before
        offers = {}
        for key, value in pull_text(b"".join(s.text for s in logins)):
            offers[key] = value
        model = expected_params(offers, self.portal, target, session.is_discovery)
        got = {name: getattr(session.params, name) for name in model}
        assert got == model, (offers, got, model)
        self.note("negotiated values checked against the model")


def established_session(sessions: SessionTable, portal: PortalConfig) -> TargetConnection:
    """Another connection's session: INITIATOR, ISID_A, CID 1, TSIH 1 on TARGET."""
    first = TargetConnection(portal=portal, sessions=sessions, now=0.0)
    first.receive_data(TEMPLATES["operational"][0].wire())
    assert isinstance(first.next_event(), LoginComplete)
    first.data_to_send()
    return first


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_login_state_machine_invariants(scenario):
    _name, existing, steps = scenario
    portal = make_portal()
    sessions = SessionTable()
    if existing:
        established_session(sessions, portal)
    conn = TargetConnection(portal=portal, sessions=sessions, now=0.0)
    checker = Checker(conn, portal, note=outcome)
    for step in steps:
        checker.feed(step)
    outcome(f"ends in {conn.state.name}")
    conn.close()
    assert conn.closed and conn.state is State.CLOSED
    assert conn.data_to_send() == [] and conn.get_timer() is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(random_step, min_size=1, max_size=6), existing=st.booleans())
def test_random_steps_from_the_first_byte(steps, existing):
    portal = make_portal()
    sessions = SessionTable()
    if existing:
        established_session(sessions, portal)
    checker = Checker(TargetConnection(portal=portal, sessions=sessions, now=0.0), portal)
    for step in steps:
        checker.feed(step)
    checker.conn.close()


def test_every_template_reaches_full_feature_phase():
    """The scripts the mutations start from are valid: unmutated, each logs in."""
    for name, steps in TEMPLATES.items():
        portal = make_portal()
        sessions = SessionTable()
        first = established_session(sessions, portal) if name == "join-existing" else None
        conn = TargetConnection(portal=portal, sessions=sessions, now=0.0)
        checker = Checker(conn, portal)
        for step in steps:
            checker.feed(step)
        assert conn.state is State.FULL_FEATURE, name
        if first is not None:  # same CID: the new connection replaced the old one
            assert first.closed
