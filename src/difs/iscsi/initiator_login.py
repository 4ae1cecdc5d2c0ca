"""Initiator login phase: builds Login Requests, follows the target's answers.

Flow (RFC 7143 6.3):

* security stage (always, CSG=0): InitiatorName, SessionType, TargetName, AuthMethod
  (``CHAP`` when mutual CHAP is configured, ``CHAP,None`` with one-way credentials, else
  ``None``), T=1 towards the operational stage. With CHAP: CHAP_A=<our list>, then
  CHAP_N/CHAP_R (+ CHAP_I/CHAP_C for mutual), and the target's CHAP_N/CHAP_R is verified;
* operational stage (CSG=1): our proposals for every operational key, T=1 towards Full Feature
  Phase; answers to keys the target offers are sent back until the target agrees to transit.

Faults of the target become ``LoginFailed`` + ``ConnectionClosed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .chap import ChapRequester
from .constants import LoginStatus, Stage
from .errors import AuthenticationFailure, LoginFailure, TextError
from .framer import Pdu
from .initiator_events import InitiatorSession, LoginFailed, LoginSucceeded
from .negotiation import OPERATIONAL_KEYS, Negotiator, proposals
from .params import NegotiatedParams
from .pdu import LOGIN_RESPONSE, LoginRequest, encode_pdu_segments
from .state import Input, State
from .text import TextAccumulator, encode_text, pull_number

if TYPE_CHECKING:
    from .initiator import InitiatorConnection

_MAX_LOGIN_EXCHANGES = 32


class InitiatorLoginContext:
    def __init__(self) -> None:
        self.stage = Stage.SECURITY_NEGOTIATION
        self.text = TextAccumulator()
        self.chap: ChapRequester | None = None
        self.chap_step = 0  # 0: AuthMethod sent, 1: CHAP_A sent, 2: CHAP_R sent, 3: verified
        self.auth_method = "None"
        self.negotiator: Negotiator | None = None
        self.exchanges = 0
        self.tpgt: int | None = None
        self.target_alias: str | None = None
        self.tsih = 0


class InitiatorLogin:
    """Mixin of InitiatorConnection: the login phase."""

    def _start_login(self: InitiatorConnection) -> None:
        config = self.config
        ctx = self._login
        keys = [("InitiatorName", config.initiator_name)]
        if config.alias:
            keys.append(("InitiatorAlias", config.alias))
        if config.target_name is None:
            keys.append(("SessionType", "Discovery"))
        else:
            keys += [("SessionType", "Normal"), ("TargetName", config.target_name)]
        if config.chap is not None:
            chap = config.chap
            mutual = config.mutual_chap
            ctx.chap = ChapRequester(
                user=chap.user, secret=chap.secret,
                mutual_user=None if mutual is None else mutual.user,
                mutual_secret=None if mutual is None else mutual.secret,
                algorithms=config.chap_algorithms, random_bytes=config.random_bytes)
            keys.append(("AuthMethod", "CHAP" if mutual is not None else "CHAP,None"))
        else:
            keys.append(("AuthMethod", "None"))
        local = proposals(config, header_digest=tuple(config.header_digest),
                          data_digest=tuple(config.data_digest))
        ctx.negotiator = Negotiator(role="initiator", local=local,
                                    discovery=config.target_name is None)
        self._send_login_request(Stage.SECURITY_NEGOTIATION, Stage.OPERATIONAL_NEGOTIATION,
                                 True, keys)

    def _send_login_request(self: InitiatorConnection, csg: int, nsg: int, transit: bool,
                            keys: list[tuple[str, str]], *, cont: bool = False) -> None:
        ctx = self._login
        ctx.exchanges += 1
        if ctx.exchanges > _MAX_LOGIN_EXCHANGES:
            raise LoginFailure("login does not converge")
        request = LoginRequest(isid=self.config.isid, tsih=self.config.tsih, itt=self._login_itt,
                               cid=self.config.cid, cmdsn=self.cmd_sn, expstatsn=self.exp_stat_sn,
                               csg=csg, nsg=nsg if transit else 0, transit=transit, cont=cont,
                               data=encode_text(keys))
        self._out.extend(encode_pdu_segments(request))

    def _on_login_response(self: InitiatorConnection, pdu: Pdu) -> None:
        (_op, flags, _vmax, _vact, _ad, _isid, tsih, _itt, statsn, expcmdsn, maxcmdsn, sclass,
         sdetail) = LOGIN_RESPONSE.unpack_from(pdu.header)
        ctx = self._login
        try:
            if sclass:
                status = (sclass << 8) | sdetail
                try:
                    name = LoginStatus(status).name
                except ValueError:
                    name = f"0x{status:04x}"
                raise LoginFailure(f"target refused login: {name}")
            self.exp_stat_sn = (statsn + 1) & 0xFFFFFFFF
            self._update_window(expcmdsn, maxcmdsn)
            transit = bool(flags & 0x80)
            cont = bool(flags & 0x40)
            csg = (flags >> 2) & 3
            nsg = flags & 3
            if csg != ctx.stage:
                raise LoginFailure(f"target answered for stage {csg}, we are in {ctx.stage}")
            pairs = ctx.text.feed(pdu.data, more=cont)
            if pairs is None:  # target continues: ask for the rest
                self._send_login_request(csg, 0, False, [])
                return
            keys = dict(pairs)
            ctx.tsih = tsih or ctx.tsih
            if "TargetPortalGroupTag" in keys:
                ctx.tpgt = _portal_group_tag(keys["TargetPortalGroupTag"])
            if "TargetAlias" in keys:
                ctx.target_alias = keys["TargetAlias"]
            negotiator = ctx.negotiator
            rest = negotiator.accept(pairs)
            answers = negotiator.respond(
                [(k, v) for k, v in rest if not k.startswith("CHAP_") and k not in (
                    "AuthMethod", "TargetPortalGroupTag", "TargetAlias")])
            if ctx.stage == Stage.SECURITY_NEGOTIATION:
                self._security_step(keys, transit, nsg, answers)
            else:
                self._operational_step(transit, nsg, answers)
        except (LoginFailure, TextError) as exc:
            self._login_failed(exc, pdu)

    def _security_step(self: InitiatorConnection, keys: dict[str, str], transit: bool, nsg: int,
                       answers: list[tuple[str, str]]) -> None:
        ctx = self._login
        chap = ctx.chap
        if "AuthMethod" in keys:
            method = keys["AuthMethod"]
            if method not in ("None", "CHAP") or (method == "CHAP" and chap is None):
                raise AuthenticationFailure(f"target chose AuthMethod={method}")
            if method == "None" and chap is not None and chap.mutual:
                raise AuthenticationFailure("target refused mutual CHAP")
            ctx.auth_method = method
        if ctx.auth_method == "CHAP":
            if ctx.chap_step == 0:
                ctx.chap_step = 1
                self._send_login_request(Stage.SECURITY_NEGOTIATION, 0, False,
                                         answers + chap.algorithm_offer())
                return
            if ctx.chap_step == 1:
                ctx.chap_step = 2
                self._send_login_request(Stage.SECURITY_NEGOTIATION,
                                         Stage.OPERATIONAL_NEGOTIATION, True,
                                         answers + chap.respond(keys))
                return
            if ctx.chap_step == 2 and transit:
                chap.verify(keys)
                ctx.chap_step = 3
        if transit:
            if ctx.auth_method == "CHAP" and ctx.chap_step != 3:
                raise AuthenticationFailure("target ended the security stage before CHAP")
            if nsg == Stage.FULL_FEATURE_PHASE:
                self._machine.process(Input.TRANSIT_FULL_FEATURE)
                self._enter_full_feature()
                return
            self._machine.process(Input.TRANSIT_OPERATIONAL)
            ctx.stage = Stage.OPERATIONAL_NEGOTIATION
            offers = ctx.negotiator.offer(OPERATIONAL_KEYS)
            self._send_login_request(Stage.OPERATIONAL_NEGOTIATION, Stage.FULL_FEATURE_PHASE,
                                     True, answers + offers)
            return
        self._machine.process(Input.SECURITY_PDU)
        self._send_login_request(Stage.SECURITY_NEGOTIATION, Stage.OPERATIONAL_NEGOTIATION, True,
                                 answers)

    def _operational_step(self: InitiatorConnection, transit: bool, nsg: int,
                          answers: list[tuple[str, str]]) -> None:
        ctx = self._login
        if transit and nsg == Stage.FULL_FEATURE_PHASE and not answers:
            if ctx.negotiator.awaiting:
                raise LoginFailure("target ended negotiation without answering our keys")
            self._machine.process(Input.TRANSIT_FULL_FEATURE)
            self._enter_full_feature()
            return
        self._machine.process(Input.OPERATIONAL_PDU)
        self._send_login_request(Stage.OPERATIONAL_NEGOTIATION, Stage.FULL_FEATURE_PHASE, True,
                                 answers)

    def _enter_full_feature(self: InitiatorConnection) -> None:
        ctx = self._login
        config = self.config
        negotiator = ctx.negotiator
        negotiator.finish()
        if config.target_name is not None and ctx.tsih == 0:
            raise LoginFailure("target did not assign a TSIH")
        params = NegotiatedParams.from_login(
            negotiator, initiator_name=config.initiator_name, target_name=config.target_name,
            session_type="Discovery" if config.target_name is None else "Normal",
            auth_method=ctx.auth_method, chap=ctx.chap)
        if "None" not in config.header_digest and not params.header_digest:
            raise LoginFailure("target refused HeaderDigest=CRC32C")
        if "None" not in config.data_digest and not params.data_digest:
            raise LoginFailure("target refused DataDigest=CRC32C")
        session = InitiatorSession(params, isid=config.isid, tsih=ctx.tsih,
                                   target_portal_group_tag=ctx.tpgt, target_alias=ctx.target_alias)
        self.session = session
        self._apply_session(session)
        self._login = None
        self._login_deadline = None
        self._set_handlers()
        self._events.append(LoginSucceeded(session))

    def _login_failed(self: InitiatorConnection, exc: Exception, pdu: Pdu | None) -> None:
        status = getattr(exc, "status", LoginStatus.INITIATOR_ERROR)
        if pdu is not None and pdu.opcode == 0x23 and pdu.header[36]:
            status_class, status_detail = pdu.header[36], pdu.header[37]
        else:
            status_class, status_detail = status >> 8, status & 0xFF
        self._events.append(LoginFailed(status_class, status_detail, str(exc)))
        if self._machine.state in (State.EXPECT_SECURITY_RESPONSE,
                                   State.EXPECT_OPERATIONAL_RESPONSE):
            self._machine.process(Input.LOGIN_REFUSED)
        self._terminate(f"login failed: {exc}")


def _portal_group_tag(value: str) -> int:
    """The target's TargetPortalGroupTag: a 16-bit number in any RFC 7143 5.1 form."""
    tag = pull_number(value)
    if tag > 0xFFFF:
        raise TextError(f"TargetPortalGroupTag {tag} is not a 16-bit value")
    return tag
