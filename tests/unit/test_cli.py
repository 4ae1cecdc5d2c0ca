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


def test_controller_rejects_unknown_volume_flags_and_missing_volumes(tmp_path) -> None:
    bad = run_difs("controller", "--data-dir", str(tmp_path), "--volume", "v:8M:shiny")
    assert bad.returncode == 2
    assert "unknown flag(s) ['shiny']" in bad.stderr and "thick" in bad.stderr
    none = run_difs("controller", "--data-dir", str(tmp_path))
    assert none.returncode == 2 and "no volumes to serve" in none.stderr
    size = run_difs("controller", "--data-dir", str(tmp_path), "--volume", "v:12Q")
    assert size.returncode == 2 and "invalid size" in size.stderr
    assert not list(tmp_path.glob("volumes/*"))  # nothing was created by the bad requests


def test_controller_bounds_options_refuse_nonsense(tmp_path) -> None:
    for option, value in (("--max-connections", "0"), ("--max-connections-per-address", "0"),
                          ("--login-timeout", "0")):
        bad = run_difs("controller", "--data-dir", str(tmp_path), "--volume", "v:8M",
                       option, value)
        assert bad.returncode == 2 and option in bad.stderr, (option, bad.stderr)


def test_controller_bounds_come_from_the_config_file_too(tmp_path) -> None:
    from difs.controller.config import load_config

    path = tmp_path / "c.toml"
    path.write_text("[controller]\nmax_connections = 10\nmax_connections_per_address = 2\n"
                    "login_timeout = 3.5\n")
    cfg = load_config(path)
    assert (cfg.max_connections, cfg.max_connections_per_address, cfg.login_timeout) == (
        10, 2, 3.5)
