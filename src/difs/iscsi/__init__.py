"""Sans-I/O iSCSI (RFC 7143). No module here imports asyncio, socket, time or logging setup.

Layout (read in this order):

* ``constants`` opcodes, flags, status/reason codes; ``errors`` the exception tree;
* ``pdu`` BHS structs and typed PDUs (``encode_pdu`` / ``pull_pdu``), ``framer`` bytes -> PDUs,
  ``digest`` CRC32C, ``serial`` RFC 1982 arithmetic;
* ``text`` key=value codec, ``negotiation`` every key's rule, ``params`` what a login settled
  (``NegotiatedParams``, both roles), ``chap`` CHAP both roles;
* ``state`` the connection state tables (Rule 1: all transitions live there);
* ``config`` PortalConfig / TargetConfig / InitiatorConfig / ChapCredentials;
* target side: ``target`` (TargetConnection) with ``target_login``, ``target_io``,
  ``target_control``; ``session`` Session / SessionTable; ``events`` what the adapter receives;
* initiator side: ``initiator`` (InitiatorConnection) with ``initiator_login``,
  ``initiator_events``.
"""

from .config import ChapCredentials, InitiatorConfig, PortalConfig, TargetConfig
from .constants import (
    AsyncEvent,
    LoginStatus,
    LogoutReason,
    RejectReason,
    ScsiStatus,
    TaskAttribute,
    TmfFunction,
    TmfResponse,
)
from .errors import IscsiError, LocalProtocolError, LoginFailure, RemoteProtocolError
from .events import (
    ConnectionClosed,
    ConnectionReinstated,
    DigestFailure,
    Event,
    LoginComplete,
    LoginRejected,
    LogoutComplete,
    ProtocolViolation,
    ScsiTask,
    SessionReinstated,
    TaskManagementRequest,
)
from .initiator import InitiatorConnection
from .initiator_events import (
    AsyncEventReceived,
    CommandAborted,
    CommandComplete,
    CommandRejected,
    DiscoveryResult,
    InitiatorSession,
    LoginFailed,
    LoginSucceeded,
    PingComplete,
    RejectReceived,
    TaskManagementComplete,
    TextResult,
)
from .params import NegotiatedParams
from .session import Session, SessionTable
from .state import State
from .target_connection import TargetConnection

__all__ = [
    "AsyncEvent", "AsyncEventReceived", "ChapCredentials", "CommandAborted", "CommandComplete",
    "CommandRejected", "ConnectionClosed", "ConnectionReinstated", "DigestFailure",
    "DiscoveryResult", "Event", "InitiatorConfig", "InitiatorConnection", "InitiatorSession",
    "IscsiError", "LocalProtocolError", "LoginComplete", "LoginFailed", "LoginFailure",
    "LoginRejected", "LoginStatus", "LoginSucceeded", "LogoutComplete", "LogoutReason",
    "NegotiatedParams", "PingComplete", "PortalConfig", "ProtocolViolation", "RejectReason",
    "RejectReceived", "RemoteProtocolError", "ScsiStatus", "ScsiTask", "Session",
    "SessionReinstated", "SessionTable", "State", "TargetConfig", "TargetConnection",
    "TaskAttribute", "TaskManagementComplete", "TaskManagementRequest", "TextResult",
    "TmfFunction", "TmfResponse",
]
