"""``difs vm`` answers bad input and an absent manager clearly, without QEMU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import free_port

pytestmark = pytest.mark.slow  # each `difs` process starts in seconds on a loaded machine


def vm(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "difs.cli.main", "vm", *args,
                           "--data-dir", str(tmp)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})


def test_define_list_show(tmp_path: Path) -> None:
    assert json.loads(vm(tmp_path, "list", "--json").stdout) == []
    done = vm(tmp_path, "define", "v1", "--app", "app1", "--mib", "2", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(vm(tmp_path, "show", "v1", "--json").stdout)
    assert (shown["name"], shown["app"], shown["mib"], shown["state"]) == ("v1", "app1", 2, "defined")
    assert [v["name"] for v in json.loads(vm(tmp_path, "list", "--json").stdout)] == ["v1"]


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    for args, message in ((("define", "Bad/Name", "--app", "a"), "is not a VM name"),
                          (("define", "v", "--app", "a", "--workload", "dance"), "unknown workload"),
                          (("show", "nope"), "no VM 'nope'"), (("start", "nope"), "no VM 'nope'")):
        done = vm(tmp_path, *args)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_start_without_a_manager_says_so_and_starts_nothing(tmp_path: Path) -> None:
    vm(tmp_path, "define", "v1", "--app", "app1")
    done = vm(tmp_path, "start", "v1", "--manager", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "is the manager running?" in done.stderr
    assert json.loads(vm(tmp_path, "show", "v1", "--json").stdout)["state"] == "defined"


def test_stopping_a_vm_that_is_not_running_unbinds_nothing(tmp_path: Path) -> None:
    """Its application may be bound for someone else: stop does not even ask the manager."""
    vm(tmp_path, "define", "v1", "--app", "app1")
    done = vm(tmp_path, "stop", "v1", "--manager", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 0 and "v1 was not running (defined); nothing to do" in done.stdout
