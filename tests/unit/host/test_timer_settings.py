"""``InitiatorTimers``: validation (errors name the setting; the host's ``SessionTimers``
names its options) and the watch period."""

from __future__ import annotations

import pytest

from difs.host.connection import SessionTimers
from difs.iscsi.initiator_timers import NO_TIMERS, InitiatorTimers


@pytest.mark.parametrize("field, value, message", [
    ("nop_timeout", 0, "nop_timeout must be a positive number of seconds"),
    ("abort_timeout", -1, "abort_timeout must be a positive number of seconds"),
    ("nop_interval", -0.5, "nop_interval must be >= 0 seconds (0: off)"),
    ("command_timeout", -1, "command_timeout must be >= 0 seconds (0: off)"),
])
def test_bad_values_name_the_setting(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError) as core:
        InitiatorTimers(**{field: value})
    assert str(core.value) == message
    with pytest.raises(ValueError) as host:
        SessionTimers(**{field: value})
    option = "--" + field.replace("_", "-")
    assert str(host.value) == message.replace(field, f"{field} ({option})")


def test_the_host_adds_the_login_timeout() -> None:
    with pytest.raises(ValueError, match=r"login_timeout \(--login-timeout\) must be a positive"):
        SessionTimers(login_timeout=0)
    timers = SessionTimers(nop_interval=None, command_timeout=2.0)
    assert isinstance(timers, InitiatorTimers) and timers.tick == 0.5


def test_zero_turns_a_check_off() -> None:
    assert InitiatorTimers(nop_interval=0, command_timeout=0).tick is None
    assert NO_TIMERS.tick is None
    assert InitiatorTimers(nop_interval=0, command_timeout=8.0, abort_timeout=6.0).tick == 1.0
    assert InitiatorTimers(nop_interval=0.1, command_timeout=None).tick == 0.05
