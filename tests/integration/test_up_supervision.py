"""``difs up`` supervises its processes: no single point of failure (issue 17 finding 2).

Real ``difs up`` clusters on free loopback ports: the manager killed (SIGTERM, then SIGKILL)
while an NBD client keeps writing and reading app2, the host killed -9, then ``difs up``
itself stopped — and the supervisor's process layer on its own, with tiny Python children.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from difs.nbd.client import NbdClient
from difs.util.supervise import ChildSpec, ChildState, RestartPolicy, Supervisor
from support import Proc, free_port, start_difs

pytestmark = pytest.mark.integration


class Up:
    """A running ``difs up`` on free ports, its output collected in the background."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "up"
        self.ports = {k: free_port() for k in ("manager", "portal", "nbd", "metrics",
                                               "ctl_metrics")}
        self.proc: Proc = start_difs(
            "up", "--data-dir", str(self.data),
            "--manager-listen", f"127.0.0.1:{self.ports['manager']}",
            "--portal", f"127.0.0.1:{self.ports['portal']}",
            "--nbd", f"127.0.0.1:{self.ports['nbd']}",
            "--host-metrics", f"127.0.0.1:{self.ports['metrics']}",
            "--controller-metrics", f"127.0.0.1:{self.ports['ctl_metrics']}", "--size", "32M")
        if not wait_until(lambda: any("Ctrl-C stops everything" in l for l in self.proc.lines)
                          or self.proc.popen.poll() is not None, 120):
            raise AssertionError("difs up did not come up:\n" + self.output())
        assert self.proc.popen.poll() is None, self.output()
        self.manager = f"http://127.0.0.1:{self.ports['manager']}"
        self.token = (self.data / "admin-token").read_text().strip()

    def output(self) -> str:
        return "\n".join(self.proc.lines + self.proc.stderr)

    def status(self) -> dict:
        return json.loads((self.data / "up-status.json").read_text())

    def child(self, name: str) -> dict:
        return self.status()["children"][name]

    def manager_get(self, path: str) -> httpx.Response:
        return httpx.get(self.manager + "/api/v1" + path, timeout=2,
                         headers={"Authorization": f"Bearer {self.token}"})

    def healthy(self) -> bool:
        try:
            return self.manager_get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_restarted(self, name: str, old_pid: int, restarts: int) -> int:
        """Wait for ``name`` to run again under a new pid; returns it."""
        def back() -> bool:
            c = self.child(name)
            return c["state"] == "running" and c["pid"] not in (None, old_pid) \
                and c["restarts"] == restarts
        assert wait_until(back, 30), f"{name} not restarted: {self.status()}\n{self.output()}"
        return self.child(name)["pid"]

    def pid(self, name: str) -> int:
        """The pid of the running ``difs <name>`` child, read from /proc (not the status file)."""
        found = [pid for pid, ppid, cmdline in processes()
                 if ppid == self.proc.popen.pid and f"difs.cli.main {name} " in cmdline]
        assert len(found) == 1, (name, found, self.output())
        return found[0]

    def stop(self) -> int:
        return self.proc.stop(signal.SIGTERM, timeout=60)


@pytest.fixture
def up(tmp_path: Path):
    cluster = Up(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


class Application:
    """An NBD client on app2 writing then reading back 64 KiB blocks, non-stop, in a thread."""

    BLOCK = 64 * 1024

    def __init__(self, nbd_port: int) -> None:
        self.client = NbdClient.open_tcp("127.0.0.1", nbd_port, "app2")
        self.done: list[float] = []  # monotonic time each verified write+read finished
        self.errors: list[str] = []
        self.written: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            offset = (i % 128) * self.BLOCK
            data = bytes([i % 251 + 1]) * self.BLOCK
            try:
                self.client.write(offset, data)
                if i % 8 == 7:
                    self.client.flush()
                got = self.client.read(offset, self.BLOCK)
            except Exception as exc:  # any failure is what the test is about
                self.errors.append(f"op {i}: {exc!r}")
                return
            if got != data:
                self.errors.append(f"op {i}: read back differs at offset {offset}")
                return
            self.written[offset] = data
            self.done.append(time.monotonic())
            i += 1

    def ops_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.done if start <= t <= end)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.flush()
        self.client.close()


def wait_until(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every live process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] != "Z":
                found.append((int(entry.name), int(stat[1]), cmdline))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (here: the cluster's data dir)."""
    return [pid for pid, _, cmdline in processes() if text in cmdline and pid != os.getpid()]


@pytest.mark.slow
def test_the_manager_killed_twice_comes_back_while_the_application_keeps_its_io(up) -> None:
    others = {n: up.pid(n) for n in ("controller", "host")}
    app = Application(up.ports["nbd"])
    try:
        assert wait_until(lambda: len(app.done) >= 5), app.errors
        for restarts, sig in ((1, signal.SIGTERM), (2, signal.SIGKILL)):
            old = up.pid("manager")
            killed_at = time.monotonic()
            os.kill(old, sig)
            # reported: one line naming it, how it ended, and its log's tail
            line = f"difs up: manager (pid {old}) killed by {sig.name}"
            assert wait_until(lambda: any(l.startswith(line) for l in up.proc.lines), 10), \
                up.output()
            report = next(i for i, l in enumerate(up.proc.lines) if l.startswith(line))
            assert "manager.log ends:" in up.proc.lines[report]
            assert up.proc.lines[report + 1].startswith("    ")  # the tail follows
            new = up.wait_restarted("manager", old, restarts)
            assert wait_until(up.healthy, 30), up.output()
            back_at = time.monotonic()
            assert up.child("manager")["last_exit"]["signal"] == sig.name
            # the application's I/O went on while the manager was away
            assert not app.errors, app.errors
            assert app.ops_between(killed_at, back_at) > 0
            assert f"difs up: manager restarted (pid {new}, restart {restarts})" in up.proc.lines
            # the host renews its lease with the manager that came back
            restarted = datetime.now(timezone.utc)

            def lease_renewed() -> bool:
                node = up.manager_get("/nodes/host1").json()
                expires = datetime.fromisoformat(node["lease_expires_at"])
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=timezone.utc)
                return node["state"] == "alive" and expires > restarted

            assert wait_until(lease_renewed, 30), up.manager_get("/nodes/host1").text
        assert wait_until(lambda: len(app.done) >= 20)
    finally:
        app.close()
    assert not app.errors, app.errors
    # the others were never touched
    now = up.status()["children"]
    assert {n: now[n]["pid"] for n in others} == others
    assert all(now[n]["restarts"] == 0 for n in others) and all(map(alive, others.values()))


@pytest.mark.slow
def test_the_host_killed_is_restarted_and_serves_again_and_stopping_up_leaves_no_process(
        up) -> None:
    app = Application(up.ports["nbd"])
    assert wait_until(lambda: len(app.done) >= 10), app.errors
    app.close()
    seen = {n: up.pid(n) for n in ("manager", "controller", "host")}
    os.kill(seen["host"], signal.SIGKILL)
    line = f"difs up: host (pid {seen['host']}) killed by SIGKILL"
    assert wait_until(lambda: any(l.startswith(line) for l in up.proc.lines), 10), up.output()
    host = up.wait_restarted("host", seen["host"], 1)

    def served_with_its_data() -> bool:
        try:
            with NbdClient.open_tcp("127.0.0.1", up.ports["nbd"], "app2") as client:
                return all(client.read(off, len(data)) == data
                           for off, data in app.written.items())
        except Exception:
            return False

    assert wait_until(served_with_its_data, 60), up.output()
    assert up.child("manager")["pid"] == seen["manager"]
    assert up.child("controller")["pid"] == seen["controller"]
    private_files(up.data)  # what difs up and its children made, the restarted host's too
    # SIGTERM of difs up: every child it ever ran is gone, no process of the cluster is left
    assert up.stop() == 0, up.output()
    assert "difs up: stopped" in up.proc.lines
    assert not any(map(alive, [*seen.values(), host]))
    assert processes_mentioning(str(up.data)) == []
    final = up.status()
    assert final["state"] == "stopped"
    assert all(c["pid"] is None and c["state"] == "stopped" for c in final["children"].values())


def private_files(root: Path) -> None:
    """Everything ``difs up`` and its children created is the user's only: 0700 / 0600."""
    assert (root.stat().st_mode & 0o777) == 0o700
    names = set()
    for path in root.rglob("*"):
        mode = path.stat().st_mode & 0o777
        names.add(path.name)
        if path.is_dir():
            assert mode == 0o700, f"{path} is {mode:o}"
        else:
            assert mode & 0o077 == 0, f"{path} is {mode:o}"
    assert {"admin-token", "manager.db", "manager.log", "controller.log", "host.log",
            "up-status.json"} <= names


# -- the process layer on its own ------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def supervisor(tmp_path: Path, said: list[str], **policy) -> Supervisor:
    return Supervisor(status_file=tmp_path / "status.json", say=said.append,
                      policy=RestartPolicy(**{"base": 0.05, "cap": 0.2, **policy}))


def check_until(sup: Supervisor, condition, timeout: float = 10.0) -> bool:
    return wait_until(lambda: (sup.check(), condition())[1], timeout)


def test_a_crash_looping_child_is_retried_and_shown_while_the_others_run(tmp_path) -> None:
    said: list[str] = []
    sup = supervisor(tmp_path, said, crash_loop_after=3)
    steady = sup.start(ChildSpec("steady", python("import time; time.sleep(60)"),
                                 tmp_path / "steady.log"))
    sup.start(ChildSpec("crashy", python("print('no such disk', flush=True); raise SystemExit(3)"),
                        tmp_path / "crashy.log"))
    steady_pid = steady.popen.pid
    try:
        assert check_until(sup, lambda: sup.child("crashy").track.restarts >= 4)
        status = json.loads((tmp_path / "status.json").read_text())
        crashy = status["children"]["crashy"]
        assert crashy["restarts"] >= 3 and crashy["last_exit"]["code"] == 3
        assert sup.child("crashy").track.failures >= 3
        assert any("crash-looping" in s for s in said)
        first = next(s for s in said if s.startswith("crashy"))
        assert "exited with code 3" in first and first.endswith("    no such disk")
        steady_now = status["children"]["steady"]
        assert (steady_now["pid"], steady_now["restarts"], steady_now["state"]) == (
            steady_pid, 0, "running")
        assert (tmp_path / "crashy.log").stat().st_mode & 0o777 == 0o600
    finally:
        sup.stop(grace=5)
    assert not alive(steady_pid)


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace_period(tmp_path) -> None:
    said: list[str] = []
    sup = supervisor(tmp_path, said)
    stubborn = sup.start(ChildSpec("stubborn", python(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"), tmp_path / "stubborn.log"))
    polite = sup.start(ChildSpec("polite", python("import time; time.sleep(60)"),
                                 tmp_path / "polite.log"))
    assert wait_until(lambda: "ready" in (tmp_path / "stubborn.log").read_text())
    t0 = time.monotonic()
    sup.stop(grace=1.0)
    assert 0.9 <= time.monotonic() - t0 < 8
    assert stubborn.popen.returncode == -signal.SIGKILL
    assert polite.popen.returncode == -signal.SIGTERM
    assert said == []  # a stop is never reported as a death, nor restarted
    sup.check()
    assert all(c.track.state is ChildState.STOPPED for c in sup.children)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "stopped"


def test_children_run_with_umask_077(tmp_path) -> None:
    sup = supervisor(tmp_path, [])
    made = tmp_path / "made"
    child = sup.start(ChildSpec("maker", python(f"open({str(made)!r}, 'w').write('x')"),
                                tmp_path / "maker.log"))
    child.popen.wait(10)
    sup.stop(grace=1)
    assert made.stat().st_mode & 0o777 == 0o600


def test_a_restart_that_cannot_start_the_program_is_said_and_tried_again(tmp_path) -> None:
    said: list[str] = []
    sup = supervisor(tmp_path, said)
    program = tmp_path / "program"
    program.write_text(f"#!{sys.executable}\nprint('ran', flush=True)\n")
    program.chmod(0o700)
    child = sup.start(ChildSpec("flaky", [str(program)], tmp_path / "flaky.log"))
    child.popen.wait(10)
    program.rename(tmp_path / "away")  # the restart finds nothing to run
    try:
        assert check_until(sup, lambda: any("could not be started" in s for s in said))
        assert child.track.state is not ChildState.RUNNING and child.popen is None
        (tmp_path / "away").rename(program)
        assert check_until(sup, lambda: any(s.startswith("flaky restarted") for s in said))
        assert wait_until(lambda: (tmp_path / "flaky.log").read_text().count("ran") >= 2)
    finally:
        sup.stop(grace=5)


def test_a_supervisor_killed_by_sigkill_leaves_no_orphan(tmp_path) -> None:
    """``kill -9`` of ``difs up`` runs none of its stop code: the kernel must end the children
    (PR_SET_PDEATHSIG), or they would keep serving on the cluster's ports with nobody to stop
    them."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from difs.util.supervise import ChildSpec, Supervisor\n"
        f"tmp = Path({str(tmp_path)!r})\n"
        "sup = Supervisor(status_file=tmp / 'status.json', say=print)\n"
        "child = sup.start(ChildSpec('sleeper', [sys.executable, '-c', "
        "'import time; time.sleep(120)'], tmp / 'sleeper.log'))\n"
        f"Path({str(pid_file)!r}).write_text(str(child.popen.pid))\n"
        "while True:\n"
        "    sup.check(); time.sleep(0.1)\n")
    supervisor_proc = Proc(subprocess.Popen(python(code), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True))
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), 20), \
            "\n".join(supervisor_proc.lines + supervisor_proc.stderr)
        child = int(pid_file.read_text())
        assert alive(child)
        os.kill(supervisor_proc.popen.pid, signal.SIGKILL)
        supervisor_proc.popen.wait(10)
        assert wait_until(lambda: not alive(child), 10), f"child {child} outlived its supervisor"
    finally:
        supervisor_proc.stop(signal.SIGKILL, timeout=10)
