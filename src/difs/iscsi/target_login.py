"""Target login phase (RFC 7143 6.3, 11.12-11.13): stages, identity, security, negotiation.

One Login Request at a time:

1. the state table (state.py) checks the stage (CSG) against the connection state;
2. text continued with the C bit is accumulated (answered by empty Login Responses);
3. the first request identifies the initiator, the session type and the target (missing
   InitiatorName/TargetName -> 2/7, unknown target -> 2/3, initiator not allowed -> 2/2,
   unknown TSIH -> 2/10);
4. the security stage picks the AuthMethod (first of the initiator's list we accept) and runs
   CHAP (target verifies CHAP_R; for mutual CHAP answers the initiator's CHAP_I/CHAP_C, refusing a
   reflected challenge) — any failure is 2/1;
5. operational keys are answered by ``Negotiator``; our declaratives (MaxRecvDataSegmentLength,
   TargetAlias, TargetPortalGroupTag on a leading login) are added;
6. a granted transit to Full Feature Phase settles the login into one ``NegotiatedParams``
   (the target's digest requirements are checked on it), registers the session (TSIH,
   reinstatement — throttled: a session in use reinstated too often answers 03/01) and sends
   the final response; digests start with the next PDU.

A ``LoginFailure`` anywhere is answered with a Login Response carrying its status, a
``LoginRejected`` event and ``ConnectionClosed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .chap import ChapResponder
from .config import ChapCredentials, TargetConfig
from .constants import LoginStatus, Stage
from .errors import (
    AuthenticationFailure,
    AuthorizationFailure,
    ConnectionFault,
    LoginFailure,
    MissingParameter,
    RemoteProtocolError,
    SessionDoesNotExist,
    TargetNotFound,
    TextError,
    TooManyConnections,
    UnsupportedVersion,
)
from .events import ConnectionReinstated, LoginComplete, LoginRejected, SessionReinstated
from .framer import Pdu
from .negotiation import LOGIN_KEYS, Negotiator, proposals
from .params import NegotiatedParams
from .pdu import LOGIN_REQUEST, LoginResponse, encode_pdu_segments
from .session import Session
from .state import TARGET_LOGIN_STATES, Input, State
from .text import TextAccumulator, encode_text

if TYPE_CHECKING:
    from .target_connection import TargetConnection

_STAGE_INPUT = {Stage.SECURITY_NEGOTIATION: Input.SECURITY_PDU,
                Stage.OPERATIONAL_NEGOTIATION: Input.OPERATIONAL_PDU}

#: keys the target answers beyond the operational ones both roles propose (RFC 7144)
_TARGET_ONLY_KEYS = {"iSCSIProtocolLevel": 1, "TaskReporting": ("RFC3720",)}


def _digests(required: bool) -> tuple[str, ...]:
    """The digest values a target accepts: CRC32C preferred, None only when not required."""
    return ("CRC32C",) if required else ("CRC32C", "None")


class LoginContext:
    """Everything the login phase accumulates; dropped once the connection is in FFP."""

    def __init__(self) -> None:
        self.isid = 0
        self.tsih = 0
        self.cid = 0
        self.first_cmdsn = 0
        self.initiator_name: str | None = None
        self.initiator_alias: str | None = None
        self.session_type = "Normal"
        self.target: TargetConfig | None = None
        self.existing: Session | None = None  # for a login with a non-zero TSIH
        self.negotiator: Negotiator | None = None
        self.credentials: ChapCredentials | None = None
        self.mutual_credentials: ChapCredentials | None = None
        self.auth_method: str | None = None
        self.authenticated = False
        self.chap: ChapResponder | None = None
        self.text = TextAccumulator()
        self.declared = False
        self.tpgt_sent = False
        self.identified = False

    @property
    def target_name(self) -> str | None:
        return self.target.name if self.target is not None else None


class LoginPhase:
    """Mixin of TargetConnection: handling of Login Requests."""

    def _on_login_request(self: TargetConnection, pdu: Pdu) -> None:
        (_op, flags, _vmax, vmin, _ad, isid_b, tsih, itt, cid, cmdsn,
         expstatsn) = LOGIN_REQUEST.unpack(pdu.header)
        transit = bool(flags & 0x80)
        cont = bool(flags & 0x40)
        csg = (flags >> 2) & 3
        nsg = flags & 3
        ctx = self._login
        assert ctx is not None
        first = self._machine.state is State.EXPECT_LOGIN_REQUEST
        try:
            try:
                self._machine.process(_STAGE_INPUT.get(csg, Input.BAD_STAGE_PDU))
                self._set_handlers()
            except ConnectionFault as exc:
                raise LoginFailure(f"login stage error: {exc}") from None
            isid = int.from_bytes(isid_b, "big")
            if first:
                ctx.isid, ctx.tsih, ctx.cid, ctx.first_cmdsn = isid, tsih, cid, cmdsn
                self.cid = cid
                self.stat_sn = expstatsn
                if vmin > 0:
                    raise UnsupportedVersion(f"initiator needs iSCSI version >= {vmin}")
            elif (isid, tsih, cid) != (ctx.isid, ctx.tsih, ctx.cid):
                raise LoginFailure("ISID/TSIH/CID changed during login")
            if transit and cont:
                raise LoginFailure("Login Request with both T and C bits")
            pairs = ctx.text.feed(pdu.data, more=cont)
            if pairs is None:  # more text follows: acknowledge with an empty response
                self._send_login_response(itt, csg, 0, False, [])
                return
            keys = dict(pairs)
            if len(keys) != len(pairs):
                raise LoginFailure("a key appears twice in one Login Request")
            if not ctx.identified:
                self._identify(keys)
            answers: list[tuple[str, str]] = []
            if csg == Stage.SECURITY_NEGOTIATION:
                answers += self._security_keys(keys)
            else:
                self._require_authenticated()
                if "AuthMethod" in keys or any(k.startswith("CHAP_") for k in keys):
                    raise LoginFailure("security keys in the operational stage")
            assert ctx.negotiator is not None
            answers += ctx.negotiator.respond(
                [(k, v) for k, v in pairs if k not in LOGIN_KEYS and not k.startswith("CHAP_")])
            granted = False
            if transit:
                allowed = (Stage.OPERATIONAL_NEGOTIATION, Stage.FULL_FEATURE_PHASE) \
                    if csg == Stage.SECURITY_NEGOTIATION else (Stage.FULL_FEATURE_PHASE,)
                if nsg not in allowed:
                    raise LoginFailure(f"invalid transit from stage {csg} to {nsg}")
                granted = csg == Stage.OPERATIONAL_NEGOTIATION or self._security_done()
            if granted and nsg == Stage.FULL_FEATURE_PHASE:
                answers += self._declarations(ctx)
                self._finish_login(itt, csg, answers)
                return
            if csg == Stage.OPERATIONAL_NEGOTIATION:
                answers += self._declarations(ctx)
            elif not ctx.tpgt_sent:
                answers += self._tpgt_declaration(ctx)
            self._send_login_response(itt, csg, nsg if granted else 0, granted, answers)
            if granted:
                self._machine.process(Input.TRANSIT_OPERATIONAL)
                self._set_handlers()
        except LoginFailure as exc:
            self._refuse_login(exc, itt, csg)
        except TextError as exc:
            self._refuse_login(LoginFailure(f"bad login text: {exc}"), itt, csg)

    # ------------------------------------------------------------------ identity

    def _identify(self: TargetConnection, keys: dict[str, str]) -> None:
        ctx = self._login
        assert ctx is not None
        ctx.identified = True
        name = keys.get("InitiatorName")
        if not name:
            raise MissingParameter("InitiatorName is missing")
        ctx.initiator_name = name
        ctx.initiator_alias = keys.get("InitiatorAlias")
        session_type = keys.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise LoginFailure(f"SessionType={session_type} not supported",
                               status=LoginStatus.SESSION_TYPE_NOT_SUPPORTED)
        ctx.session_type = session_type
        portal = self.portal
        if session_type == "Normal":
            target_name = keys.get("TargetName")
            if not target_name:
                raise MissingParameter("TargetName is missing for a Normal session")
            target = portal.targets.get(target_name)
            if target is None:
                raise TargetNotFound(f"no target named {target_name}")
            ctx.target = target
            if not target.allows(name):
                raise AuthorizationFailure(f"{name} is not allowed on {target_name}")
            ctx.credentials, ctx.mutual_credentials = target.chap, target.mutual_chap
        else:
            ctx.credentials = portal.discovery_auth
            ctx.mutual_credentials = portal.discovery_mutual_chap
        if ctx.tsih:
            session = self.sessions.by_tsih(ctx.tsih)
            if (session is None or session.initiator_name != name or session.isid != ctx.isid
                    or session.session_type != session_type
                    or session.target_name != ctx.target_name):
                raise SessionDoesNotExist(f"no session with TSIH {ctx.tsih} for {name}")
            allowed = session.params.max_connections
            if ctx.cid not in session.connections and len(session.connections) >= allowed:
                raise TooManyConnections(f"session allows {allowed} connections")
            ctx.existing = session
        ctx.negotiator = Negotiator(role="target", local=self._local_keys(ctx),
                                    discovery=session_type == "Discovery")
        if ctx.existing is not None:
            ctx.negotiator.values.update(ctx.existing.params.key_values())

    def _local_keys(self: TargetConnection, ctx: LoginContext) -> dict[str, Any]:
        target = ctx.target
        hd = target is not None and target.require_header_digest
        dd = target is not None and target.require_data_digest
        return proposals(self.portal, header_digest=_digests(hd),
                         data_digest=_digests(dd)) | _TARGET_ONLY_KEYS

    # ------------------------------------------------------------------ security

    def _security_keys(self: TargetConnection, keys: dict[str, str]) -> list[tuple[str, str]]:
        ctx = self._login
        assert ctx is not None
        out: list[tuple[str, str]] = []
        if ctx.auth_method is None:
            offered = keys.get("AuthMethod")
            acceptable = ("CHAP",) if ctx.credentials is not None else ("None",)
            if offered is None:  # the default, AuthMethod=None
                chosen = "None" if ctx.credentials is None else None
            else:
                chosen = next((m for m in offered.split(",") if m in acceptable), None)
            if chosen is None:
                raise AuthenticationFailure(
                    f"no acceptable AuthMethod in {offered!r} (target requires CHAP)"
                    if ctx.credentials is not None else f"AuthMethod {offered!r} not supported")
            ctx.auth_method = chosen
            if offered is not None:
                out.append(("AuthMethod", chosen))
            if chosen == "CHAP":
                creds = ctx.credentials
                mutual = ctx.mutual_credentials
                assert creds is not None
                ctx.chap = ChapResponder(
                    user=creds.user, secret=creds.secret,
                    mutual_user=None if mutual is None else mutual.user,
                    mutual_secret=None if mutual is None else mutual.secret,
                    algorithms=self.portal.chap_algorithms,
                    issued=self.sessions.issued_challenges,
                    random_bytes=self.portal.random_bytes)
        chap_keys = {k: v for k, v in keys.items() if k.startswith("CHAP_")}
        if not chap_keys:
            return out
        if ctx.chap is None or ctx.authenticated:
            raise AuthenticationFailure("unexpected CHAP keys")
        if "CHAP_A" in chap_keys:
            if ctx.chap.algorithm is not None or len(chap_keys) != 1:
                raise AuthenticationFailure("unexpected CHAP_A")
            out += ctx.chap.challenge_keys(chap_keys["CHAP_A"])
        else:
            out += ctx.chap.verify(chap_keys)
            ctx.authenticated = True
        return out

    def _security_done(self: TargetConnection) -> bool:
        ctx = self._login
        assert ctx is not None
        if ctx.auth_method is None:
            if ctx.credentials is not None:
                return False
            ctx.auth_method = "None"
        return ctx.auth_method == "None" or ctx.authenticated

    def _require_authenticated(self: TargetConnection) -> None:
        ctx = self._login
        assert ctx is not None
        if ctx.credentials is not None and not ctx.authenticated:
            raise AuthenticationFailure("authentication required before operational stage")
        if ctx.auth_method is None:
            ctx.auth_method = "None"

    # ------------------------------------------------------------------ declarations

    def _tpgt_declaration(self: TargetConnection, ctx: LoginContext) -> list[tuple[str, str]]:
        ctx.tpgt_sent = True
        if ctx.session_type == "Normal" and ctx.tsih == 0:
            return [("TargetPortalGroupTag", str(self.portal.portal_group_tag))]
        return []

    def _declarations(self: TargetConnection, ctx: LoginContext) -> list[tuple[str, str]]:
        out = [] if ctx.tpgt_sent else self._tpgt_declaration(ctx)
        if not ctx.declared:
            ctx.declared = True
            if ctx.target is not None and ctx.target.alias:
                out.append(("TargetAlias", ctx.target.alias))
            out.append(("MaxRecvDataSegmentLength", str(self.portal.max_recv_data_segment_length)))
        return out

    # ------------------------------------------------------------------ responses

    def _send_login_response(self: TargetConnection, itt: int, csg: int, nsg: int, transit: bool,
                             pairs: list[tuple[str, str]], *, tsih: int = 0,
                             status: int = LoginStatus.SUCCESS) -> None:
        ctx = self._login
        expcmdsn, maxcmdsn = self._window()
        response = LoginResponse(
            isid=ctx.isid if ctx is not None else 0, tsih=tsih, itt=itt,
            statsn=self._next_stat_sn(), expcmdsn=expcmdsn, maxcmdsn=maxcmdsn,
            status_class=status >> 8, status_detail=status & 0xFF, csg=csg, nsg=nsg,
            transit=transit, data=encode_text(pairs))
        self._out.extend(encode_pdu_segments(response))

    def _finish_login(self: TargetConnection, itt: int, csg: int,
                      answers: list[tuple[str, str]]) -> None:
        ctx = self._login
        assert ctx is not None and ctx.negotiator is not None and ctx.initiator_name is not None
        negotiator = ctx.negotiator
        negotiator.finish()
        params = NegotiatedParams.from_login(
            negotiator, initiator_name=ctx.initiator_name, target_name=ctx.target_name,
            session_type=ctx.session_type, auth_method=ctx.auth_method or "None", chap=ctx.chap)
        target = ctx.target
        if target is not None:
            if target.require_header_digest and not params.header_digest:
                raise LoginFailure(f"target {target.name} requires HeaderDigest=CRC32C")
            if target.require_data_digest and not params.data_digest:
                raise LoginFailure(f"target {target.name} requires DataDigest=CRC32C; "
                                   "this initiator did not offer it")
        if ctx.existing is None:
            session = Session(params, isid=ctx.isid, tpgt=self.portal.portal_group_tag,
                              initiator_alias=ctx.initiator_alias,
                              target_alias=None if target is None else target.alias,
                              command_window=self.portal.command_window)
            session.start_sequence(ctx.first_cmdsn)
            old = self.sessions.register(session, now=self._now)
            if old is not None:
                old_connections = list(old.connections.values())
                for connection in old_connections:
                    connection._terminate("session reinstated by a new login")
                self._events.append(SessionReinstated(
                    old, tuple(c.connection_id for c in old_connections)))
        else:
            session = ctx.existing
            old_connection = session.connections.get(ctx.cid)
            session.connections[ctx.cid] = self  # first, so the session survives the old one
            if old_connection is not None:
                old_connection._terminate("connection reinstated by a new login")
                self._events.append(ConnectionReinstated(session, old_connection.connection_id))
        session.connections[ctx.cid] = self
        self.session = session
        self._send_login_response(itt, csg, Stage.FULL_FEATURE_PHASE, True, answers,
                                  tsih=session.tsih)
        self._machine.process(Input.TRANSIT_FULL_FEATURE)
        # Full Feature Phase starts with the next PDU in each direction.
        self._framer.start_full_feature(params, role="target")
        self.header_digest = params.header_digest
        self.data_digest = params.data_digest
        self.send_limit = params.send_limit("target")
        self._login = None
        self._login_deadline = None
        self._set_handlers()
        self._start_keepalive()
        self._events.append(LoginComplete(session, self.connection_id, params))

    def _refuse_login(self: TargetConnection, exc: LoginFailure, itt: int, csg: int) -> None:
        ctx = self._login
        if ctx is not None and ctx.chap is not None:
            ctx.chap.forget()
        self._send_login_response(itt, csg, 0, False, [], status=exc.status)
        self._events.append(LoginRejected(
            exc.status_class, exc.status_detail, str(exc),
            None if ctx is None else ctx.initiator_name, None if ctx is None else ctx.target_name))
        if self._machine.state in TARGET_LOGIN_STATES:
            self._machine.process(Input.LOGIN_REFUSED)
        self._terminate(f"login refused: {exc}")

    def _login_unexpected_pdu(self: TargetConnection, pdu: Pdu) -> None:
        itt = int.from_bytes(pdu.header[16:20], "big")
        self._refuse_login(LoginFailure(f"opcode 0x{pdu.opcode:02x} during login",
                                        status=LoginStatus.INVALID_DURING_LOGIN), itt, 0)

    def _login_fault(self: TargetConnection, exc: RemoteProtocolError) -> None:
        failure = exc if isinstance(exc, LoginFailure) else LoginFailure(str(exc))
        self._refuse_login(failure, 0, 0)
