"""The ``difs`` command answers as a command-line tool should."""

import subprocess
import sys

from difs import __version__


def run_difs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "difs.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def test_version_prints_package_version() -> None:
    result = run_difs("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"difs {__version__}"


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = run_difs("no-such-command")
    assert result.returncode == 2
    assert "no-such-command" in result.stderr
