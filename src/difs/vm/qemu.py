"""QEMU for a difs VM: which accelerator, the command line (pure), the disk's NBD address.

KVM when ``/dev/kvm`` opens and answers KVM_GET_API_VERSION, else TCG (``accelerator()``
says which and why; ``DIFS_VM_ACCEL=tcg`` forces TCG; :func:`difs.vm.lifecycle.boot` falls
back to TCG when QEMU dies at once under KVM).  The disk is the application's NBD export on
its host: over the host's Unix socket when it serves one on this machine
(``nbd+unix:///APP?socket=PATH``), else over TCP (``nbd://HOST:PORT/APP``), attached as
``-drive ...,if=virtio,cache=none,format=raw``.
The serial console goes to a log file; the guest powers off when its workload is done
(``-no-reboot``: a guest panic ends QEMU too).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from difs.util.units import format_portal, parse_portal
from difs.vm.errors import BootError

QEMU = "qemu-system-x86_64"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12


@dataclass(frozen=True)
class Accelerator:
    name: str  # "kvm" or "tcg"
    why: str


def accelerator(device: str = "/dev/kvm") -> Accelerator:
    """KVM when ``device`` answers the KVM API, else TCG; ``DIFS_VM_ACCEL=tcg`` forces TCG."""
    if os.environ.get("DIFS_VM_ACCEL") == "tcg":
        return Accelerator("tcg", "DIFS_VM_ACCEL=tcg")
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Accelerator("tcg", f"{device} is not usable ({exc.strerror})")
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return Accelerator("tcg", f"{device} does not answer ({exc.strerror})")
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return Accelerator("tcg", f"{device} speaks KVM API {version}, not {KVM_API_VERSION}")
    return Accelerator("kvm", f"{device} is usable")


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise BootError(f"{QEMU} not found: install qemu-system-x86 (./scripts/setup.sh does)")
    return found


def is_socket(path: str | None) -> bool:
    try:
        return path is not None and stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def disk_url(app: str, *, nbd: str, nbd_unix: str | None) -> str:
    """The application's export: the host's Unix socket when it serves one here, else TCP."""
    if is_socket(nbd_unix):
        return f"nbd+unix:///{app}?socket={nbd_unix}"
    host, port = parse_portal(nbd, default_port=10809)
    return f"nbd://{format_portal(host, port)}/{app}"


def kernel_cmdline(workload: str, *, mib: int, seed: str, seconds: int) -> str:
    return (f"console=ttyS0 panic=-1 quiet difs.workload={workload} difs.mib={mib} "
            f"difs.seed={seed} difs.seconds={seconds}")


def argv(*, qemu: str, name: str, accel: Accelerator, kernel: Path, initrd: Path, cmdline: str,
         disk: str, console: Path, memory_mib: int) -> list[str]:
    if "," in disk:
        raise BootError(f"the disk address {disk!r} has a comma, which QEMU's -drive cannot take")
    return [qemu, "-name", f"difs-vm-{name}", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-accel", accel.name, "-cpu", "host" if accel.name == "kvm" else "max",
            "-m", f"{memory_mib}M", "-smp", "1", "-serial", f"file:{console}",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
            "-drive", f"file={disk},if=virtio,cache=none,format=raw"]
