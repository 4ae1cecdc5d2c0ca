"""Regressions for what the fuzzing of policy inputs (tests/fuzz/policy_documents.py) found: a
policy file or --services text nested deeper than the JSON decoder's recursion limit escaped
as RecursionError (a traceback) instead of the clear error every other bad file gets. The
crashing input is kept in tests/fuzz/corpus/policy_documents/crash-deep-json-policy-file."""

from __future__ import annotations

import pytest
import typer

from difs.cli.options import ServiceFlags
from difs.controller.config import resolve_policy as controller_policy
from difs.controller.errors import ConfigError
from difs.host.agent import resolve_policy as host_policy
from difs.host.errors import HostError

DEEP = '{"name": "deep", "services": ' + "[" * 100_000


@pytest.fixture
def deep_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    return path


def test_controller_policy_file_too_deep_is_a_config_error(deep_file):
    with pytest.raises(ConfigError, match="not JSON"):
        controller_policy(str(deep_file))


def test_host_policy_file_too_deep_is_a_host_error(deep_file):
    with pytest.raises(HostError, match="not JSON"):
        host_policy(str(deep_file))


def test_cli_services_file_or_text_too_deep_is_a_clear_failure(deep_file):
    with pytest.raises(typer.Exit):
        ServiceFlags(file=deep_file).build()
    with pytest.raises(typer.Exit):
        ServiceFlags(services_json="[" * 100_000).build()
