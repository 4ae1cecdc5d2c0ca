"""A VM's life: power-on -> bind, boot, power-off -> unbind (the seed's scenario).

``start`` asks the manager to bind the VM's application on its host (``POST
/apps/APP/binding``, like ``difs app start``) and waits for the host to report the binding
``running``; a VM whose application cannot be bound or does not run is not started
(:class:`NotStarted`, with the manager's or the host's reason) — and a binding made for it is
undone.  Then a **monitor** process (``python -m difs.vm``, detached) boots QEMU, records its
pid, waits for the guest to power off (or for ``stop`` / the timeout), parses the console,
writes the result into the VM's state and unbinds the application: power-off -> unbind.
``run`` is ``start`` followed by waiting for that state.

The monitor gets the manager's token in its environment (``DIFS_TOKEN``), never in a file
or on its command line.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from difs.nodelink.client import ManagerClient, ManagerError, ManagerUnreachable
from difs.util.logs import log_event
from difs.vm import image, qemu
from difs.vm.console import parse_console
from difs.vm.errors import BootError, NotStarted
from difs.vm.store import Store, VmDefinition, open_log

log = logging.getLogger("difs.vm")

#: seconds QEMU with KVM must survive before a failure counts as the guest's, not KVM's
KVM_PROBE_SECONDS = 2.0


# -- power-on -> bind, power-off -> unbind -----------------------------------------------


def _binding(client: ManagerClient, app: str) -> dict[str, Any] | None:
    return client.request("GET", f"/apps/{app}").get("binding")


def power_on(client: ManagerClient, vm: VmDefinition, *, timeout: float,
             say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Bind the VM's application on its host and wait until the host runs it; NotStarted
    with the reason otherwise (and the binding made here undone)."""
    try:
        node = client.request("GET", f"/nodes/{vm.host}")
        if node.get("kind") != "host" or not node.get("iqn"):
            raise NotStarted(f"{vm.host} is not a host that advertises an initiator name")
        before = _binding(client, vm.app)
        binding = client.bind(vm.app, initiator_iqn=node["iqn"], host=vm.host)
    except ManagerError as exc:
        raise NotStarted(f"application {vm.app} cannot be bound on host {vm.host}: "
                         f"{exc.problem.get('detail') or exc.problem.get('title')}") from None
    say(f"application {vm.app} bound on host {vm.host}")
    deadline = time.monotonic() + timeout
    while binding is not None and binding.get("state") not in ("running", "failed"):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
        binding = _binding(client, vm.app)
    state = binding.get("state") if binding else None
    if state == "running":
        return binding
    why = (f"the host reports it failed: {binding.get('state_reason')}" if state == "failed" else
           "it was unbound meanwhile" if binding is None else
           f"the host has not reported it running after {timeout:g}s")
    if before is None and binding is not None:
        power_off(client, vm)
    raise NotStarted(f"application {vm.app} did not start on host {vm.host}: {why}")


def power_off(client: ManagerClient, vm: VmDefinition) -> bool:
    """Unbind the VM's application (False when it was not bound)."""
    try:
        client.unbind(vm.app)
    except ManagerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


# -- processes ---------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot); None when it is gone — a zombie
    (ended, not yet reaped: the `difs vm` that launched it may still run, or nobody reaps
    orphans in a container) counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return None


def alive(state: dict[str, Any], who: str = "monitor") -> bool:
    """Whether the process recorded as ``who`` still runs (same pid *and* start time)."""
    pid = state.get(f"{who}_pid")
    return bool(pid) and _start_time(pid) == state.get(f"{who}_start")


def launch(store: Store, vm: VmDefinition, *, manager: str, token: str | None,
           workload: str, timeout: float) -> int:
    """Start the VM's monitor, detached; returns its pid."""
    folder = store.vm_dir(vm.name)
    argv = [sys.executable, "-m", "difs.vm", "--data-dir", str(store.data_dir), "--manager",
            manager, "--workload", workload, "--timeout", str(timeout), vm.name]
    env = {**os.environ, **({"DIFS_TOKEN": token} if token else {})}
    store.set_state(vm.name, {"state": "starting", "app": vm.app, "host": vm.host,
                              "workload": workload})
    with open_log(folder / "vm.log") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                 start_new_session=True, close_fds=True)
    store.update_state(vm.name, monitor_pid=popen.pid, monitor_start=_start_time(popen.pid))
    return popen.pid


def wait_state(store: Store, name: str, done: Callable[[dict[str, Any]], bool],
               timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = store.state(name)
        if done(state) or not alive(state) or time.monotonic() >= deadline:
            return store.state(name)
        time.sleep(0.1)


def stop(store: Store, name: str, *, grace: float = 20.0) -> dict[str, Any]:
    """Power the VM off (its monitor ends QEMU, records and unbinds); the final state."""
    state = store.state(name)
    if alive(state):
        os.kill(state["monitor_pid"], signal.SIGTERM)
        state = wait_state(store, name, lambda s: False, grace)
    return state


# -- the monitor (its own process) -------------------------------------------------------


def _spawn_qemu(args: list[str], folder: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DIFS_TOKEN"}
    with open_log(folder / "qemu.log") as err:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=env, close_fds=True)


def boot(store: Store, vm: VmDefinition, workload: str
         ) -> tuple[subprocess.Popen[bytes], qemu.Accelerator, dict[str, Any]]:
    """Build (or find) the image and start QEMU: KVM when usable, else TCG; a KVM that
    fails at once (nested, MSR refused) falls back to TCG, and the state says why."""
    img, built = image.build(store.data_dir)
    folder = store.vm_dir(vm.name)
    console = folder / "console.log"
    disk = qemu.disk_url(vm.app, nbd=vm.nbd, nbd_unix=vm.nbd_unix)
    seed = vm.seed if workload.startswith("persist") else os.urandom(4).hex()
    accel = qemu.accelerator()
    info = {"image": img.key, "image_built": built, "kernel": img.release, "disk": disk,
            "workload": workload, "console": str(console)}
    while True:
        open_log(console, "wb").close()
        args = qemu.argv(qemu=qemu.qemu_binary(), name=vm.name, accel=accel, kernel=img.kernel,
                         initrd=img.initrd, disk=disk, console=console, memory_mib=vm.memory_mib,
                         cmdline=qemu.kernel_cmdline(workload, mib=vm.mib, seed=seed,
                                                     seconds=vm.seconds))
        started = time.monotonic()
        proc = _spawn_qemu(args, folder)
        if accel.name != "kvm":
            return proc, accel, {**info, "started": started}
        try:
            code = proc.wait(KVM_PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            return proc, accel, {**info, "started": started}
        if code == 0 or console.stat().st_size:
            return proc, accel, {**info, "started": started}
        why = _tail(folder / "qemu.log")
        log_event(log, "kvm failed, using tcg", level=logging.WARNING, vm=vm.name, qemu=why)
        accel = qemu.Accelerator("tcg", f"KVM failed at start ({why})")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def monitor(store: Store, vm: VmDefinition, *, manager: str, token: str | None,
            workload: str, timeout: float) -> int:
    """Boot, wait for power-off (or SIGTERM: stop, or the timeout), record, unbind."""
    stopping: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append("stop"))
    try:
        proc, accel, info = boot(store, vm, workload)
    except (BootError, image.ImageError, OSError) as exc:
        store.update_state(vm.name, state="failed", reason=str(exc))
        _unbind(manager, token, vm)
        return 1
    store.update_state(vm.name, state="running", qemu_pid=proc.pid,
                       qemu_start=_start_time(proc.pid),
                       accelerator=accel.name, accelerator_why=accel.why, result=None,
                       ended_by=None, qemu_exit=None, boot_to_poweroff_seconds=None,
                       **{k: v for k, v in info.items() if k != "started"})
    log_event(log, "vm booted", vm=vm.name, app=vm.app, accelerator=accel.name, why=accel.why,
              disk=info["disk"], workload=workload)
    ended_by = _wait(proc, stopping, timeout)
    seconds = time.monotonic() - info["started"]
    result = parse_console(Path(info["console"]).read_text(errors="replace"))
    _unbind(manager, token, vm)
    store.update_state(vm.name, state="powered-off", ended_by=ended_by, qemu_exit=proc.returncode,
                       boot_to_poweroff_seconds=round(seconds, 2), result=result.as_dict())
    log_event(log, "vm powered off", vm=vm.name, by=ended_by, seconds=f"{seconds:.2f}",
              accelerator=accel.name, passed=result.passed, reason=result.reason())
    return 0


def _wait(proc: subprocess.Popen[bytes], stopping: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while proc.poll() is None:
        if stopping or (deadline is not None and time.monotonic() >= deadline):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return "stop" if stopping else "timeout"
        time.sleep(0.05)
    return "guest"


def _unbind(manager: str, token: str | None, vm: VmDefinition) -> None:
    try:
        with ManagerClient(manager, token=token) as client:
            power_off(client, vm)
    except (ManagerError, ManagerUnreachable) as exc:
        log_event(log, "unbind failed", level=logging.WARNING, vm=vm.name, app=vm.app,
                  error=str(exc))
