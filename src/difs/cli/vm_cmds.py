"""``difs vm ...``: virtual machines whose disk is an application's volume.

``define`` records a VM (its application, workload, size); ``start`` is power-on -> bind:
the application is bound on the VM's host and must run there before QEMU boots (else the VM
is not started, exit 1, with the reason); ``stop`` powers it off, then unbinds; ``run``
starts it, waits for the guest to power off and prints what the guest verified (exit 0 only
when it verified everything with no error).  ``list`` / ``show`` give each VM's state, the
accelerator it ran with (KVM or TCG), its boot-to-power-off time and its result.

VMs are kept in ``--data-dir`` (``DIFS_VM_DIR``, default ``var/vm``); see :mod:`difs.vm.store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from difs.cli.common import client, console, emit, err_console, fail, human_size, table
from difs.cli.options import JsonOpt, ManagerOpt, TokenOpt
from difs.nodelink.client import DEFAULT_URL
from difs.vm import lifecycle
from difs.vm.errors import VmError
from difs.vm.store import WORKLOADS, Store, VmDefinition

vm_app = typer.Typer(help="Virtual machines on difs disks: define, start, stop, run, list, show.",
                     no_args_is_help=True)

DataDirOpt = Annotated[Path, typer.Option("--data-dir", envvar="DIFS_VM_DIR",
                                          help="Where VMs, their images and logs are kept.")]
DEFAULT_DIR = Path("var/vm")
WorkloadOpt = Annotated[str | None, typer.Option(
    "--workload", help=f"For this boot only: {', '.join(WORKLOADS)}.")]


def _store(data_dir: Path) -> Store:
    try:
        return Store(data_dir)
    except OSError as exc:
        fail(f"cannot use {data_dir}: {exc}")


def _vm(store: Store, name: str) -> VmDefinition:
    try:
        return store.get(name)
    except VmError as exc:
        fail(str(exc))


def _token(token: str | None) -> str | None:
    from difs.cli.common import local_admin_token

    return token or local_admin_token()


@vm_app.command("define")
def define(
    name: str,
    app: Annotated[str, typer.Option("--app", help="The application whose volume is the VM's disk.")],
    workload: Annotated[str, typer.Option("--workload", help=f"{', '.join(WORKLOADS)}.")] = "verify",
    mib: Annotated[int, typer.Option("--mib", help="MiB the workload writes and verifies.")] = 8,
    memory: Annotated[int, typer.Option("--memory", help="Guest memory in MiB.")] = 256,
    seconds: Annotated[int, typer.Option("--seconds", help="steady: how long it runs.")] = 10,
    host: Annotated[str, typer.Option("--host", help="The host node that serves the disk.")] = "host1",
    nbd: Annotated[str, typer.Option("--nbd", help="The host's NBD server HOST:PORT.")] = "127.0.0.1:10809",
    nbd_unix: Annotated[str | None, typer.Option("--nbd-unix", help="The host's NBD Unix socket, used when it exists here.")] = None,
    data_dir: DataDirOpt = DEFAULT_DIR, as_json: JsonOpt = False,
) -> None:
    """Define a VM attached to an application (nothing starts yet)."""
    vm = VmDefinition(name=name, app=app, workload=workload, mib=mib, memory_mib=memory,
                      seconds=seconds, host=host, nbd=nbd, nbd_unix=nbd_unix)
    try:
        _store(data_dir).define(vm)
    except VmError as exc:
        fail(str(exc))
    emit(_view(vm, {"state": "defined"}), as_json,
         lambda v: console.print(f"VM {name} defined on application {app} (workload {workload}, {mib} MiB)"))


def _start(store: Store, vm: VmDefinition, manager: str, token: str | None, workload: str | None,
           timeout: float) -> None:
    state = store.state(vm.name)
    if lifecycle.alive(state):
        fail(f"VM {vm.name} is already {state.get('state')}", f"stop it first: `difs vm stop {vm.name}`")
    with client(manager, token) as c:
        try:
            lifecycle.power_on(c, vm, timeout=60.0, say=lambda m: err_console.print(m, highlight=False))
        except VmError as exc:
            store.set_state(vm.name, {"state": "not-started", "reason": str(exc)})
            fail(f"VM {vm.name} not started: {exc}", f"see `difs app show {vm.app}`")
    lifecycle.launch(store, vm, manager=manager, token=_token(token),
                     workload=workload or vm.workload, timeout=timeout)
    state = lifecycle.wait_state(store, vm.name, lambda s: s.get("state") != "starting", 60)
    if state.get("state") not in ("running", "powered-off"):
        fail(f"VM {vm.name} did not boot: {state.get('reason') or state.get('state')}",
             f"see {store.vm_dir(vm.name)}/vm.log")


@vm_app.command("start")
def start(
    name: str, workload: WorkloadOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Power it off after this many seconds (0: never).")] = 0.0,
    data_dir: DataDirOpt = DEFAULT_DIR, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Power on: bind the application on the VM's host, then boot the VM (in the background)."""
    store = _store(data_dir)
    vm = _vm(store, name)
    _start(store, vm, manager, token, workload, timeout)
    emit(_view(vm, store.state(name)), as_json, _render)


@vm_app.command("run")
def run(
    name: str, workload: WorkloadOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up (power off) after this many seconds.")] = 600.0,
    data_dir: DataDirOpt = DEFAULT_DIR, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the VM, wait until it powers off, print what the guest verified;
    exit 0 only when it verified all its data with no error."""
    store = _store(data_dir)
    vm = _vm(store, name)
    _start(store, vm, manager, token, workload, timeout)
    state = lifecycle.wait_state(store, name, lambda s: s.get("state") != "running", timeout + 30)
    # powered off: its monitor still records the result and unbinds the application; run ends
    # when that is done (a `run` right after finds the VM stopped, the application unbound)
    state = lifecycle.wait_state(store, name, lambda s: False, 30)
    emit(_view(vm, state), as_json, _render)
    result = state.get("result") or {}
    if not result.get("passed"):
        fail(f"VM {name}: {result.get('reason') or state.get('reason') or state.get('state')}",
             f"its console: {store.vm_dir(name)}/console.log")


@vm_app.command("stop")
def stop(name: str, data_dir: DataDirOpt = DEFAULT_DIR, manager: ManagerOpt = DEFAULT_URL,
         token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Power off the VM, then unbind its application."""
    store = _store(data_dir)
    vm = _vm(store, name)
    was_on = store.state(name).get("state") in ("starting", "running")
    state = lifecycle.stop(store, name)
    if lifecycle.alive(state):
        fail(f"VM {name} did not power off", f"see {store.vm_dir(name)}/vm.log")
    if was_on:  # its monitor unbinds at power-off; one that died did not: unbind here
        with client(manager, token) as c:
            lifecycle.power_off(c, vm)
    emit(_view(vm, store.state(name)), as_json, lambda v: console.print(
        f"VM {name} powered off; application {vm.app} unbound" if was_on
        else f"VM {name} was not running ({v['state']}); nothing to do", highlight=False))


@vm_app.command("list")
def list_(data_dir: DataDirOpt = DEFAULT_DIR, as_json: JsonOpt = False) -> None:
    """List VMs with their application, state, accelerator and last result."""
    store = _store(data_dir)
    views = [_view(vm, store.state(vm.name)) for vm in store.list()]
    emit(views, as_json, lambda vs: table("VMs", ["name", "app", "workload", "state", "accel", "boot->off s", "result"], [
        [v["name"], v["app"], v["workload"], v["state"], v.get("accelerator") or "-",
         v.get("boot_to_poweroff_seconds") or "-", _verdict(v)] for v in vs]))


@vm_app.command("show")
def show(name: str, data_dir: DataDirOpt = DEFAULT_DIR, as_json: JsonOpt = False) -> None:
    """Show a VM: definition, state, accelerator (KVM or TCG), disk, timings, the guest's result."""
    store = _store(data_dir)
    emit(_view(_vm(store, name), store.state(name)), as_json, _render)


def _view(vm: VmDefinition, state: dict[str, Any]) -> dict[str, Any]:
    running = lifecycle.alive(state)
    current = state.get("state", "defined")
    if current in ("starting", "running") and not running:
        current = "crashed"  # its monitor is gone without recording a power-off
    keep = ("accelerator", "accelerator_why", "disk", "image", "kernel", "console", "ended_by",
            "qemu_exit", "boot_to_poweroff_seconds", "result", "reason", "qemu_pid")
    return {"name": vm.name, "app": vm.app, "host": vm.host, "workload": state.get("workload", vm.workload),
            "mib": vm.mib, "memory_mib": vm.memory_mib, "state": current,
            **{k: state[k] for k in keep if k in state}}


def _verdict(v: dict[str, Any]) -> str:
    r = v.get("result")
    if not r:
        return v.get("reason") or "-"
    return "passed" if r["passed"] else f"FAILED: {r['reason']}"


def _render(v: dict[str, Any]) -> None:
    console.print(f"[bold]VM {v['name']}[/]  {v['state']}  (application {v['app']} on host {v['host']})",
                  highlight=False)
    if v.get("accelerator"):
        console.print(f"  accelerator: {v['accelerator']} ({v.get('accelerator_why')})", highlight=False)
    if v.get("disk"):
        console.print(f"  disk: {v['disk']}  guest: {v.get('kernel')}, {v['memory_mib']} MiB", highlight=False)
    if v.get("boot_to_poweroff_seconds") is not None:
        console.print(f"  boot to power-off: {v['boot_to_poweroff_seconds']} s (ended by {v.get('ended_by')}, "
                      f"QEMU exit {v.get('qemu_exit')})", highlight=False)
    r = v.get("result")
    if r:
        console.print(f"  workload {r['workload']}: written {human_size(r['bytes_written'] or 0)}, read "
                      f"{human_size(r['bytes_read'] or 0)}, verified {human_size(r['verified'] or 0)}, "
                      f"errors {r['errors']}, guest kernel I/O errors {r['io_errors']}"
                      f"{', O_DIRECT' if r.get('direct_io') else ''}", highlight=False)
        console.print(f"  result: {_verdict(v)}", highlight=False)
    elif v.get("reason"):
        console.print(f"  {v['reason']}", highlight=False)
