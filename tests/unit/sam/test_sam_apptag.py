"""The application-tag rule, pinned to concrete values.

Hosts write ``application_tag(NAME)`` into every block of application NAME and controllers
expect it: a change to the rule would make every stored block fail its application-tag check.
These values are the contract; change them only with a migration of the data written so far.
"""

import pytest

from difs.controller import endpoint
from difs.host import app_pi
from difs.sam.apptag import application_tag


@pytest.mark.parametrize("name,tag", [
    ("app1", 0xE592),
    ("app2", 0x6017),
    ("db", 0x4DD1),
    ("vm-0", 0x282F),
    ("", 0x8F38),
    ("a" * 63, 0xA72D),
    ("ünïcode", 0x4B6B),                 # UTF-8 bytes of the name
])
def test_application_tag_values(name: str, tag: int) -> None:
    assert application_tag(name) == tag


def test_the_escape_ffffh_is_never_a_tag() -> None:
    # BLAKE2s("vm-19327")[:2] is FFFFh, the SBC-4 "do not check" escape: mapped to FFFEh
    assert application_tag("vm-19327") == 0xFFFE


def test_host_and_controller_use_this_rule() -> None:
    assert app_pi.application_tag is application_tag
    assert endpoint.application_tag is application_tag
