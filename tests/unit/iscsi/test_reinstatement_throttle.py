"""ReinstatementThrottle: a live session's I_T nexus is reinstated at most ``limit`` times per
``window`` seconds (issue 17 finding 5); its memory stays bounded."""

from __future__ import annotations

import pytest

from difs.iscsi.constants import LoginStatus
from difs.iscsi.errors import LoginFailure
from difs.iscsi.session import ReinstatementThrottle


class Key:
    def __init__(self, name: str, isid: int = 0x023D00000000) -> None:
        self.initiator_name, self.isid = name, isid
        self.key = (name, isid, 1, "iqn.t")


def test_the_window_slides() -> None:
    throttle = ReinstatementThrottle()
    k = Key("iqn.a")
    for t in (0.0, 1.0, 2.0):
        throttle.check(k, t)
    with pytest.raises(LoginFailure) as refused:
        throttle.check(k, 5.0)
    assert refused.value.status == LoginStatus.SERVICE_UNAVAILABLE
    assert "0x023d00000000" in str(refused.value)
    throttle.check(k, 10.0)  # the first one left the window
    throttle.check(Key("iqn.b"), 5.0)  # other nexuses are not affected


def test_it_remembers_a_bounded_number_of_nexuses() -> None:
    throttle = ReinstatementThrottle()
    for i in range(throttle.max_keys * 2):
        throttle.check(Key(f"iqn.{i}"), 0.0)
    assert len(throttle._times) == throttle.max_keys
