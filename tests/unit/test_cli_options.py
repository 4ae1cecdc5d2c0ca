"""The shared CLI options (difs.cli.options): the service flags are declared once, every
command that takes them lists them in the same order, and a command receives them gathered."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from difs.cli.main import app
from difs.cli.options import SERVICE_FLAGS, ServiceFlags, clean_services, with_service_flags

FLAG_OPTIONS = [
    "--file", "--services", "--header-digest", "--data-digest", "--pi", "--auth", "--tls",
    "--at-host-encryption", "--reservation-iops", "--limit-iops", "--reservation-bps",
    "--limit-bps", "--weight", "--latency-ms", "--dscp", "--exclusive", "--isolation-tag", "--vlan",
]


def _options(*path: str) -> list[str]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return [p.opts[0] for p in command.params]


@pytest.mark.parametrize("path", [("policy", "create"), ("policy", "update"), ("tier", "create"),
                                  ("tier", "update"), ("app", "create"), ("app", "set-policy")])
def test_every_command_with_service_flags_lists_them_all_in_order(path) -> None:
    options = _options(*path)
    at = options.index("--file")
    assert options[at:at + len(FLAG_OPTIONS)] == FLAG_OPTIONS
    assert options[at + len(FLAG_OPTIONS):] == ["--manager", "--token", "--json"]


def test_a_command_receives_the_flags_gathered() -> None:
    toy = typer.Typer()
    seen = {}

    @toy.command()
    @with_service_flags
    def make(name: str, flags: ServiceFlags = SERVICE_FLAGS,
             loud: Annotated[bool, typer.Option("--loud")] = False) -> None:
        """Make NAME."""
        seen.update(name=name, loud=loud, services=clean_services(flags.build()),
                    given=flags.given())

    result = CliRunner().invoke(toy, [
        "x", "--data-digest", "--pi", "1", "--reservation-iops", "500",
        "--services", json.dumps({"isolation": {"vlan": 7}}), "--loud"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "x", "loud": True, "given": True, "services": {
        "isolation": {"vlan": 7}, "integrity": {"data_digest": True, "protection_information": 1},
        "qos": {"reservation_iops": 500}}}
    assert make.__doc__ == "Make NAME."
    CliRunner().invoke(toy, ["y"])
    assert seen["given"] is False and seen["services"] == {}


def test_ad_hoc_policy_options_of_controller_and_host() -> None:
    command = typer.main.get_command(app)
    helps = {name: next(p.help for p in command.commands[name].params if p.opts == ["--policy"])
             for name in ("controller", "host")}
    assert helps == {
        "controller": "VOLUME=TIER (gold, silver, bronze) or VOLUME=FILE.json (a policy document): "
                      "stored in the volume's metadata and enforced on every I/O.",
        "host": "NAME=TIER (gold, silver, bronze) or NAME=FILE.json (a policy document); "
                "default bronze.",
    }
