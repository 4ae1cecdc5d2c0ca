"""Exceptions of the iSCSI core. Every fault of the peer carries the wire code that answers it.

Exception tree::

    IscsiError                          base of everything raised by difs.iscsi
    ├── LocalProtocolError              the caller (adapter) misused the API; a bug on our side
    └── RemoteProtocolError             the peer broke the protocol; never escapes the core
        ├── PduRejected                 answered with a Reject PDU (reject_reason); connection lives
        │   └── DataDigestError         reason 0x02, data segment CRC32C mismatch
        ├── ConnectionFault             the connection is terminated (ProtocolViolation +
        │   │                           ConnectionClosed events); reject_reason if a Reject is sent
        │   ├── FramingError            BHS/AHS/data lengths out of bounds or out of the negotiated
        │   │                           MaxRecvDataSegmentLength
        │   └── HeaderDigestError       BHS+AHS CRC32C mismatch (ERL 0: cannot resynchronise)
        ├── TextError                   malformed key=value text (reject_reason / login status)
        └── LoginFailure                answered with a Login Response (status_class/status_detail),
            │                           then the connection is closed
            ├── AuthenticationFailure   2/1 (CHAP failed, reflected challenge, ...)
            ├── AuthorizationFailure    2/2 (initiator not allowed on the target)
            ├── TargetNotFound          2/3
            ├── UnsupportedVersion      2/5
            ├── TooManyConnections      2/6
            ├── MissingParameter        2/7 (InitiatorName, TargetName for Normal sessions, ...)
            ├── SessionDoesNotExist     2/10 (TSIH of an unknown session)
            └── TargetError             3/0

Inside the core, handlers raise these; the dispatch loop of a connection turns them into PDUs and
events. Only ``LocalProtocolError`` reaches the adapter (like h11's rule: anything else escaping is
a bug).
"""

from __future__ import annotations

from .constants import LoginStatus, RejectReason


class IscsiError(Exception):
    """Base class of all iSCSI core exceptions."""


class LocalProtocolError(IscsiError):
    """The adapter asked for something the protocol state does not allow."""


class RemoteProtocolError(IscsiError):
    """The peer sent something invalid. ``reject_reason`` is the Reject code that describes it."""

    reject_reason: RejectReason = RejectReason.PROTOCOL_ERROR

    def __init__(self, message: str, *, reject_reason: RejectReason | None = None) -> None:
        super().__init__(message)
        if reject_reason is not None:
            self.reject_reason = reject_reason


class PduRejected(RemoteProtocolError):
    """The PDU is answered with a Reject carrying its header; the connection continues."""


class DataDigestError(PduRejected):
    """``pdu`` is the framed PDU whose data segment failed the check (its header is sound)."""

    reject_reason = RejectReason.DATA_DIGEST_ERROR

    def __init__(self, message: str, *, pdu: object = None) -> None:
        super().__init__(message)
        self.pdu = pdu


class ConnectionFault(RemoteProtocolError):
    """The connection cannot continue; it is terminated."""


class FramingError(ConnectionFault):
    pass


class HeaderDigestError(ConnectionFault):
    pass


class TextError(RemoteProtocolError):
    """Malformed key=value text (bad key name, duplicate key, oversize text, bad encoding)."""


class LoginFailure(RemoteProtocolError):
    """Login refused with ``status``; the connection is closed after the Login Response."""

    status: LoginStatus = LoginStatus.INITIATOR_ERROR

    def __init__(self, message: str, *, status: LoginStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def status_class(self) -> int:
        return self.status >> 8

    @property
    def status_detail(self) -> int:
        return self.status & 0xFF


class AuthenticationFailure(LoginFailure):
    status = LoginStatus.AUTHENTICATION_FAILURE


class AuthorizationFailure(LoginFailure):
    status = LoginStatus.AUTHORIZATION_FAILURE


class TargetNotFound(LoginFailure):
    status = LoginStatus.NOT_FOUND


class UnsupportedVersion(LoginFailure):
    status = LoginStatus.UNSUPPORTED_VERSION


class TooManyConnections(LoginFailure):
    status = LoginStatus.TOO_MANY_CONNECTIONS


class MissingParameter(LoginFailure):
    status = LoginStatus.MISSING_PARAMETER


class SessionDoesNotExist(LoginFailure):
    status = LoginStatus.SESSION_DOES_NOT_EXIST


class TargetError(LoginFailure):
    status = LoginStatus.TARGET_ERROR
