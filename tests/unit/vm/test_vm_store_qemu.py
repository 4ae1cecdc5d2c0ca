"""VM definitions kept private and atomic, and the QEMU command line for a difs disk."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from difs.vm import qemu
from difs.vm.errors import BootError, DefinitionError
from difs.vm.store import Store, VmDefinition


def test_definitions_are_kept_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "vm")
    store.define(VmDefinition(name="web-1", app="app1", mib=4))
    assert [v.name for v in store.list()] == ["web-1"]
    assert store.get("web-1").mib == 4 and len(store.get("web-1").seed) == 8
    assert (tmp_path / "vm").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "vm" / "vms.json").stat().st_mode & 0o777 == 0o600
    store.update_state("web-1", state="running")
    assert store.state("web-1")["state"] == "running"
    assert (tmp_path / "vm" / "vms").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "vm" / "vms" / "web-1" / "state.json").stat().st_mode & 0o777 == 0o600
    assert "token" not in json.dumps(json.loads((tmp_path / "vm" / "vms.json").read_text()))


@pytest.mark.parametrize("bad, message", [
    (dict(name="../x"), "is not a VM name"), (dict(name="A"), "is not a VM name"),
    (dict(workload="mine"), "unknown workload"), (dict(mib=0), "--mib 0 is out of range"),
    (dict(memory_mib=64), "--memory 64 is out of range"),
])
def test_bad_definitions_are_refused_clearly(tmp_path: Path, bad: dict, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Store(tmp_path).define(VmDefinition(**{"name": "v", "app": "a", **bad}))


def test_a_name_is_defined_once_and_unknown_names_say_how(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(VmDefinition(name="v", app="a"))
    with pytest.raises(DefinitionError, match="already defined"):
        store.define(VmDefinition(name="v", app="b"))
    with pytest.raises(DefinitionError, match="difs vm define w"):
        store.get("w")
    (tmp_path / "vms.json").write_text("{not json")
    with pytest.raises(DefinitionError, match="not valid JSON"):
        store.list()


def test_the_disk_is_the_unix_socket_when_it_exists_else_tcp(tmp_path: Path) -> None:
    path = tmp_path / "nbd.sock"
    assert qemu.disk_url("app1", nbd="127.0.0.1:10809", nbd_unix=str(path)) == "nbd://127.0.0.1:10809/app1"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert qemu.disk_url("app1", nbd="127.0.0.1:10809", nbd_unix=str(path)) == \
            f"nbd+unix:///app1?socket={path}"
    assert qemu.disk_url("a", nbd="[::1]:1234", nbd_unix=None) == "nbd://[::1]:1234/a"


def test_the_command_line() -> None:
    args = qemu.argv(qemu="qemu", name="v", accel=qemu.Accelerator("tcg", "test"),
                     kernel=Path("/k"), initrd=Path("/i"), disk="nbd://127.0.0.1:1/app1",
                     console=Path("/c.log"), memory_mib=256,
                     cmdline=qemu.kernel_cmdline("verify", mib=8, seed="ab", seconds=5))
    assert args[args.index("-drive") + 1] == "file=nbd://127.0.0.1:1/app1,if=virtio,cache=none,format=raw"
    assert args[args.index("-accel") + 1] == "tcg" and "-no-reboot" in args
    assert args[args.index("-serial") + 1] == "file:/c.log"
    assert "difs.workload=verify difs.mib=8 difs.seed=ab" in args[args.index("-append") + 1]
    with pytest.raises(BootError, match="comma"):
        qemu.argv(qemu="qemu", name="v", accel=qemu.Accelerator("tcg", ""), kernel=Path("/k"),
                  initrd=Path("/i"), disk="nbd+unix:///a?socket=/x,y", console=Path("/c"),
                  memory_mib=256, cmdline="")


def test_the_accelerator_says_which_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert qemu.accelerator(str(tmp_path / "no-kvm")) == qemu.Accelerator(
        "tcg", f"{tmp_path / 'no-kvm'} is not usable (No such file or directory)")
    (tmp_path / "file").write_text("")
    assert qemu.accelerator(str(tmp_path / "file")).name == "tcg"  # opens, but is no KVM
    monkeypatch.setenv("DIFS_VM_ACCEL", "tcg")
    assert qemu.accelerator() == qemu.Accelerator("tcg", "DIFS_VM_ACCEL=tcg")
