"""``difs host`` refuses bad CHAP and timer options with a usage error naming the option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from difs.cli.main import app
from difs.host.pathgroup import ChapSecrets, CredentialBook, parse_chap
from difs.host.connection import SessionTimers
from difs.iscsi.config import ChapCredentials

APP = ["--app", "a=iscsi://127.0.0.1:1/iqn.2026-11.io.difs:x.a/0"]


@pytest.mark.parametrize("args, message", [
    (["--mutual-chap", "ctl:secret-secret"], "--mutual-chap needs --chap"),
    (["--chap", "no-secret"], "--chap: write USER:SECRET"),
    (["--chap", "u:s", "--mutual-chap", ":s"], "--mutual-chap: write USER:SECRET"),
    (["--nop-timeout", "0"], "--nop-timeout"),
    (["--command-timeout", "-1"], "--command-timeout"),
    (["--policy", "a=/no/such/policy.json"], "policy file /no/such/policy.json"),
])
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["host", *APP, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_chap_parsing_and_the_credential_book() -> None:
    assert parse_chap("user:pa:ss") == ChapCredentials("user", "pa:ss")
    default = ChapSecrets(ChapCredentials("h", "s1"))
    special = ChapSecrets(ChapCredentials("h", "s2"), ChapCredentials("c", "s3"))
    book = CredentialBook(default=default, per_target={"iqn.x:db": special})
    assert book.for_target(portal="p:3260", target="iqn.x:db") is special
    assert book.for_target(portal="p:3260", target="iqn.x:other") is default
    assert CredentialBook().for_target(portal="p", target="t") is None
    assert "s1" not in repr(default)  # secrets never printed


def test_timers_tick_follows_the_shortest_timeout() -> None:
    assert SessionTimers(nop_interval=None, command_timeout=None).tick is None
    assert SessionTimers(nop_interval=2.0, command_timeout=30.0).tick == 0.5
    assert SessionTimers(nop_interval=None, command_timeout=0.1).tick == 0.05
    assert SessionTimers().tick == 1.0
