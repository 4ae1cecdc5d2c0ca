"""What the benchmark measures: tgt, difs controllers and hosts, and qemu-nbd bridges.

Every process is started here, on loopback and free ports, with its output in
the run's log directory, and stopped by its own pid (never by name).

An :class:`Endpoint` is one column of a results table: a URL a client can open
(``iscsi://`` or ``nbd://``) and the processes whose CPU time counts as its cost.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import VENV_BIN, BenchError, Service, free_port, wait_port

TGT_IQN = "iqn.2001-04.com.example:bench"
TGT_SOCKETS = Path("/var/run/tgtd")


@dataclass
class Endpoint:
    name: str
    url: str
    cpu_pids: list[int]
    #: for iSCSI endpoints, an NBD bridge (qemu-nbd + libiscsi) so that fio can drive them
    nbd_url: str | None = None
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Tgt:
    """tgt 1.0.x (Debian package ``tgt``), the C user-space target difs is compared with.

    ``tgtd -C N`` names its control socket ``/var/run/tgtd/socket.N`` (N < 32768), so
    each instance gets an unused N; tgtd ignores SIGTERM, so it is stopped through
    ``tgtadm`` (delete the target, then the system) with SIGKILL as the fallback.
    """

    def __init__(self, name: str, image: Path, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.control = self._free_control()
        self.service = Service(name, ["tgtd", "-f", "-C", str(self.control), "--iscsi",
                                      f"portal=127.0.0.1:{self.port}"], log_dir)
        self.pid = self.service.pid
        try:
            wait_port(self.port, proc=self.service.proc)
            self._adm("--op", "new", "--mode", "target", "--tid", "1", "-T", TGT_IQN)
            self._adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
                      "-b", str(image))
            self._adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        except BaseException:
            self.stop()
            raise
        self.url = f"iscsi://127.0.0.1:{self.port}/{TGT_IQN}/1"

    @staticmethod
    def _free_control() -> int:
        for _ in range(100):
            n = random.randint(2000, 32000)
            if not (TGT_SOCKETS / f"socket.{n}").exists():
                return n
        raise BenchError(f"no free tgtd control number in {TGT_SOCKETS}")

    def _adm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
                             capture_output=True, text=True, timeout=30)
        if check and out.returncode:
            raise BenchError(f"tgtadm {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def stop(self) -> None:
        if self.service.alive():
            self._adm("--op", "delete", "--mode", "target", "--tid", "1", "--force", check=False)
            self._adm("--op", "delete", "--mode", "system", check=False)
            try:
                self.service.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.service.stop(term_timeout=1)  # SIGTERM is ignored by tgtd: this ends in SIGKILL
        for suffix in ("", ".lock"):
            (TGT_SOCKETS / f"socket.{self.control}{suffix}").unlink(missing_ok=True)

    def endpoint(self) -> Endpoint:
        return Endpoint(self.name, self.url, [self.pid])


def difs_command() -> str:
    exe = VENV_BIN / "difs"
    if not exe.exists():
        raise BenchError(f"{exe} is missing: run ./scripts/setup.sh (or .venv/bin/pip install -e .)")
    return str(exe)


class DifsController:
    """``difs controller`` serving each ``volumes[name]`` image (copied) as volume ``name``.

    The image is copied to ``DATA_DIR/volumes/NAME.img`` before the controller
    starts; the controller then creates the volume's metadata around the existing
    file (same size), exactly as ``--volume NAME:SIZE`` does for a new volume.
    """

    def __init__(self, name: str, work: Path, volumes: dict[str, Path], log_dir: Path,
                 extra: list[str] | None = None, *, volume_flags: str = "") -> None:
        """``volume_flags`` is appended to each ``--volume NAME:SIZE`` (e.g. ``:pi1``). A
        PI-formatted volume is created empty and the image written *through* the controller
        (qemu-img convert, protect 0), so every block has PI the controller generated and
        checks on read — a copied file would read back with "unwritten" escape PI, unchecked.
        """
        self.name = name
        self.port = free_port()
        data = work / name
        (data / "volumes").mkdir(parents=True, exist_ok=True)
        args = [difs_command(), "controller", "--portal", f"127.0.0.1:{self.port}",
                "--data-dir", str(data), "--name", "bench", "--log-level", "warning"]
        self.files: dict[str, Path] = {}
        through = "pi" in volume_flags
        for vol, image in volumes.items():
            target = data / "volumes" / f"{vol}.img"
            if not through:
                shutil.copyfile(image, target)
            self.files[vol] = target
            args += ["--volume", f"{vol}:{image.stat().st_size}{volume_flags}"]
        args += extra or []
        self.service = Service(name, args, log_dir)
        self.pid = self.service.pid
        lines = self.service.wait_lines("iscsi://", len(volumes))
        self.urls = {vol: next(u for u in lines if f".{vol}/" in u) for vol in volumes}
        if through:
            for vol, image in volumes.items():
                subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
                                str(image), self.urls[vol]], check=True, capture_output=True,
                               timeout=600)

    def stop(self) -> None:
        self.service.stop()

    def endpoint(self, volume: str = "bench", name: str | None = None) -> Endpoint:
        return Endpoint(name or self.name, self.urls[volume], [self.pid])


class DifsHost:
    """``difs host``: each application's volume as an NBD export, its I/O over the
    channels (``digests``, ``plain``, ...) that satisfy its policy tier."""

    def __init__(self, name: str, apps: list[tuple[str, str, str]], channels: str,
                 log_dir: Path, *, unix: bool = False) -> None:
        self.name = name
        self.port = free_port()
        args = [difs_command(), "host", "--nbd", f"127.0.0.1:{self.port}", "--channels", channels,
                "--log-level", "warning", "--initiator-name", f"iqn.2026-11.io.difs.bench:{name}"]
        self.unix_path: str | None = None
        if unix:  # short path: sun_path holds 108 bytes
            self._sockdir = tempfile.mkdtemp(prefix="difsbench-")
            self.unix_path = f"{self._sockdir}/nbd.sock"
            args += ["--nbd-unix", self.unix_path]
        for app, url, tier in apps:
            args += ["--app", f"{app}={url}", "--policy", f"{app}={tier}"]
        self.service = Service(name, args, log_dir)
        self.pid = self.service.pid
        lines = self.service.wait_lines("nbd://", len(apps))
        self.urls = {app: next(u for u in lines if u.endswith(f"/{app}")) for app, _, _ in apps}

    def unix_url(self, app: str) -> str:
        """The libnbd/QEMU URI of ``app``'s export on the host's Unix socket."""
        return f"nbd+unix:///{app}?socket={self.unix_path}"

    def stop(self) -> None:
        self.service.stop()
        if self.unix_path:
            shutil.rmtree(self._sockdir, ignore_errors=True)


class QemuNbd:
    """qemu-nbd exporting an iSCSI LUN (through libiscsi) over NBD, so that fio's nbd
    engine can run random writes against any iSCSI target. The bridge is C and the
    same for every target; its CPU is not counted as the target's."""

    def __init__(self, name: str, iscsi_url: str, log_dir: Path) -> None:
        self.port = free_port()
        self.service = Service(name, [
            "qemu-nbd", "-f", "raw", "--cache=none", "--aio=threads", "-x", "bench",
            "-b", "127.0.0.1", "-p", str(self.port), "--persistent", "--shared=16", iscsi_url,
        ], log_dir)
        wait_port(self.port, proc=self.service.proc)
        self.url = f"nbd://127.0.0.1:{self.port}/bench"

    def stop(self) -> None:
        self.service.stop()


class Stack:
    """Everything started for one run, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self._started: list = []

    def add(self, thing):
        self._started.append(thing)
        return thing

    def close(self) -> None:
        while self._started:
            thing = self._started.pop()
            try:
                thing.stop()
            except Exception as exc:  # keep stopping the rest
                print(f"benchmarks: stopping {thing!r} failed: {exc}", flush=True)
        time.sleep(0.1)
