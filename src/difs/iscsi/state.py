"""Connection state machines — Rule 1: everything that changes a connection's state is here.

States are named by what they await. A transition table maps ``(state, input) -> next state``;
a pair missing from the table is a protocol error and moves the machine to a terminal state
(``StateMachine.process`` raises ``ConnectionFault`` after doing so). Side effects (building
responses, negotiating keys) live in the handlers of target.py / initiator.py; the handlers feed
the machine the inputs below and consult ``state`` to dispatch PDUs by phase.

Target (RFC 7143 6.3 login stages, 8.1 connection states)::

    EXPECT_LOGIN_REQUEST --SECURITY_PDU--> SECURITY_NEGOTIATION --TRANSIT_OPERATIONAL-->
    OPERATIONAL_NEGOTIATION --TRANSIT_FULL_FEATURE--> FULL_FEATURE --LOGOUT_ACCEPTED-->
    LOGGED_OUT; a refused login goes to LOGIN_FAILED; faults, timeouts and transport loss go to
    CLOSED. (SECURITY_NEGOTIATION --TRANSIT_FULL_FEATURE--> FULL_FEATURE and
    EXPECT_LOGIN_REQUEST --OPERATIONAL_PDU--> OPERATIONAL_NEGOTIATION are allowed too.)

Initiator::

    EXPECT_LOGIN_RESPONSE (security or operational stage, tracked by ``stage``) --> FULL_FEATURE
    --LOGOUT_SENT--> EXPECT_LOGOUT_RESPONSE --LOGOUT_ACCEPTED--> LOGGED_OUT.
"""

from __future__ import annotations

from enum import Enum, auto

from .errors import ConnectionFault


class State(Enum):
    # target
    EXPECT_LOGIN_REQUEST = auto()
    SECURITY_NEGOTIATION = auto()
    OPERATIONAL_NEGOTIATION = auto()
    # initiator
    EXPECT_SECURITY_RESPONSE = auto()
    EXPECT_OPERATIONAL_RESPONSE = auto()
    EXPECT_LOGOUT_RESPONSE = auto()
    # both
    FULL_FEATURE = auto()
    LOGGED_OUT = auto()  # terminal
    LOGIN_FAILED = auto()  # terminal
    CLOSED = auto()  # terminal


class Input(Enum):
    SECURITY_PDU = auto()  # a Login PDU of the security stage (CSG=0)
    OPERATIONAL_PDU = auto()  # a Login PDU of the operational stage (CSG=1)
    BAD_STAGE_PDU = auto()  # a Login PDU with CSG 2 or 3
    NON_LOGIN_PDU = auto()  # any other PDU during login
    LOGIN_PDU_IN_FULL_FEATURE = auto()
    TRANSIT_OPERATIONAL = auto()  # the target agreed to move to the operational stage
    TRANSIT_FULL_FEATURE = auto()  # the target agreed to move to full feature phase
    LOGIN_REFUSED = auto()  # a Login Response with a non-zero status class
    LOGOUT_SENT = auto()
    LOGOUT_ACCEPTED = auto()
    FAULT = auto()  # protocol violation that ends the connection
    TIMEOUT = auto()
    TRANSPORT_LOST = auto()


TERMINAL = frozenset({State.LOGGED_OUT, State.LOGIN_FAILED, State.CLOSED})
TARGET_LOGIN_STATES = frozenset({State.EXPECT_LOGIN_REQUEST, State.SECURITY_NEGOTIATION,
                                 State.OPERATIONAL_NEGOTIATION})
INITIATOR_LOGIN_STATES = frozenset({State.EXPECT_SECURITY_RESPONSE,
                                    State.EXPECT_OPERATIONAL_RESPONSE})

S = State
I = Input  # noqa: E741

TARGET_TRANSITIONS: dict[tuple[State, Input], State] = {
    (S.EXPECT_LOGIN_REQUEST, I.SECURITY_PDU): S.SECURITY_NEGOTIATION,
    (S.EXPECT_LOGIN_REQUEST, I.OPERATIONAL_PDU): S.OPERATIONAL_NEGOTIATION,
    (S.SECURITY_NEGOTIATION, I.SECURITY_PDU): S.SECURITY_NEGOTIATION,
    (S.SECURITY_NEGOTIATION, I.TRANSIT_OPERATIONAL): S.OPERATIONAL_NEGOTIATION,
    (S.SECURITY_NEGOTIATION, I.TRANSIT_FULL_FEATURE): S.FULL_FEATURE,
    (S.OPERATIONAL_NEGOTIATION, I.OPERATIONAL_PDU): S.OPERATIONAL_NEGOTIATION,
    (S.OPERATIONAL_NEGOTIATION, I.TRANSIT_FULL_FEATURE): S.FULL_FEATURE,
    (S.FULL_FEATURE, I.LOGOUT_ACCEPTED): S.LOGGED_OUT,
}
for _state in TARGET_LOGIN_STATES:
    TARGET_TRANSITIONS[(_state, I.LOGIN_REFUSED)] = S.LOGIN_FAILED
for _state in TARGET_LOGIN_STATES | {S.FULL_FEATURE}:
    TARGET_TRANSITIONS[(_state, I.FAULT)] = S.CLOSED
    TARGET_TRANSITIONS[(_state, I.TIMEOUT)] = S.CLOSED
for _state in TARGET_LOGIN_STATES | TERMINAL | {S.FULL_FEATURE}:
    TARGET_TRANSITIONS[(_state, I.TRANSPORT_LOST)] = S.CLOSED

INITIATOR_TRANSITIONS: dict[tuple[State, Input], State] = {
    (S.EXPECT_SECURITY_RESPONSE, I.SECURITY_PDU): S.EXPECT_SECURITY_RESPONSE,
    (S.EXPECT_SECURITY_RESPONSE, I.TRANSIT_OPERATIONAL): S.EXPECT_OPERATIONAL_RESPONSE,
    (S.EXPECT_SECURITY_RESPONSE, I.TRANSIT_FULL_FEATURE): S.FULL_FEATURE,
    (S.EXPECT_OPERATIONAL_RESPONSE, I.OPERATIONAL_PDU): S.EXPECT_OPERATIONAL_RESPONSE,
    (S.EXPECT_OPERATIONAL_RESPONSE, I.TRANSIT_FULL_FEATURE): S.FULL_FEATURE,
    (S.FULL_FEATURE, I.LOGOUT_SENT): S.EXPECT_LOGOUT_RESPONSE,
    (S.EXPECT_LOGOUT_RESPONSE, I.LOGOUT_ACCEPTED): S.LOGGED_OUT,
}
for _state in INITIATOR_LOGIN_STATES:
    INITIATOR_TRANSITIONS[(_state, I.LOGIN_REFUSED)] = S.LOGIN_FAILED
for _state in INITIATOR_LOGIN_STATES | {S.FULL_FEATURE, S.EXPECT_LOGOUT_RESPONSE}:
    INITIATOR_TRANSITIONS[(_state, I.FAULT)] = S.CLOSED
    INITIATOR_TRANSITIONS[(_state, I.TIMEOUT)] = S.CLOSED
for _state in INITIATOR_LOGIN_STATES | TERMINAL | {S.FULL_FEATURE, S.EXPECT_LOGOUT_RESPONSE}:
    INITIATOR_TRANSITIONS[(_state, I.TRANSPORT_LOST)] = S.CLOSED


class StateMachine:
    """Applies one transition table. ``process`` returns the new state or, for a pair missing
    from the table, moves to CLOSED and raises ``ConnectionFault``."""

    __slots__ = ("state", "_table")

    def __init__(self, table: dict[tuple[State, Input], State], initial: State) -> None:
        self._table = table
        self.state = initial

    def process(self, event: Input) -> State:
        next_state = self._table.get((self.state, event))
        if next_state is None:
            old = self.state
            self.state = State.CLOSED
            raise ConnectionFault(f"{event.name} is not allowed in state {old.name}")
        self.state = next_state
        return next_state

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL
