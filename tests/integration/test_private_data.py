"""Files and arguments do not expose data (issue 17, finding 8), with real processes.

A controller creates its data directory 0700 and every volume file (image, PI, intent log,
journal, metadata) 0600, and tightens files an older difs left open; a manager creates its data
directory 0700 and its SQLite database and admin token 0600. CHAP secrets can come from files
(``USER:@FILE`` on the command line, ``secret_file`` in the TOML configuration): a standard
initiator (libiscsi) authenticates with them, and neither ``/proc/PID/cmdline`` nor any log
line shows them.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest
from support import controller, free_port, need_tool, run, start_difs

pytestmark = pytest.mark.integration

INITIATOR = "iqn.2026-11.io.difs.test:client"
SECRET = "alice-secret-from-a-file"
TARGET_SECRET = "target-secret-in-a-file"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # what a shell gives: files 0644 unless difs says otherwise
    yield
    os.umask(old)


def test_controller_volume_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "ctl"
    args = ("--volume", "plain:8M", "--volume", "prot:8M:pi1")
    with controller(data_dir, *args) as ctl:
        assert ctl.urls
    volumes = data_dir / "volumes"
    assert mode(data_dir) == 0o700 and mode(volumes) == 0o700
    names = {p.name: mode(p) for p in volumes.iterdir()}
    for name in ("plain.img", "plain.json", "prot.img", "prot.json", "prot.pi", "prot.pilog"):
        assert names.get(name) == 0o600, names
    assert all(m == 0o600 for m in names.values()), names
    # files an older difs left readable by others are made private when the volume opens
    os.chmod(volumes / "plain.img", 0o644)
    os.chmod(volumes / "prot.pi", 0o644)
    with controller(data_dir, *args):
        pass
    assert mode(volumes / "plain.img") == 0o600 and mode(volumes / "prot.pi") == 0o600


def test_manager_database_and_admin_token_are_private(tmp_path: Path) -> None:
    import httpx

    data = tmp_path / "data"
    port = free_port()
    mgr = start_difs("manager", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                     env={"DIFS_ADMIN_TOKEN": ""})
    try:
        deadline = time.monotonic() + 30
        while True:
            assert mgr.popen.poll() is None, mgr.log_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the manager did not come up"
            time.sleep(0.1)
        assert mode(data) == 0o700
        files = {p.name: mode(p) for p in data.iterdir()}
        assert files.get("manager.db") == 0o600 and files.get("admin-token") == 0o600, files
        assert all(m == 0o600 for m in files.values()), files  # -wal and -shm too
    finally:
        mgr.stop()


def secret_file(tmp_path: Path, name: str, secret: str) -> Path:
    path = tmp_path / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return path


def assert_secrets_hidden(pid: int, log: str, *secrets: str) -> None:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    for secret in secrets:
        assert secret.encode() not in cmdline, cmdline
        assert secret not in log


def inq(ctl, volume: str, user_secret: str, target_secret: str):
    url = ctl.url(volume).replace("iscsi://", f"iscsi://alice%{user_secret}@")
    return run(["iscsi-inq", "-i", INITIATOR,
                url + f"?target_user=ctl&target_password={target_secret}"], check=False)


def test_chap_secrets_from_files_authenticate_and_stay_hidden(tmp_path: Path) -> None:
    need_tool("iscsi-inq")
    user_file = secret_file(tmp_path, "alice.chap", SECRET)
    target_file = secret_file(tmp_path, "ctl.chap", TARGET_SECRET)
    with controller(tmp_path / "ctl", "--volume", "sec:8M", "--chap", f"sec=alice:@{user_file}",
                    "--mutual-chap", f"sec=ctl:@{target_file}", "--log-level", "debug") as ctl:
        ok = inq(ctl, "sec", SECRET, TARGET_SECRET)
        assert ok.returncode == 0, ok.stderr
        assert "DIFS" in ok.stdout
        assert inq(ctl, "sec", "not-the-secret-000", TARGET_SECRET).returncode != 0
        assert inq(ctl, "sec", SECRET, "not-the-target-secret").returncode != 0
        assert_secrets_hidden(ctl.proc.popen.pid, ctl.proc.log_text(), SECRET, TARGET_SECRET)
    everything = ctl.proc.log_text() + "\n".join(ctl.proc.lines)  # to the end, stdout too
    assert SECRET not in everything and TARGET_SECRET not in everything


def test_chap_secret_file_in_the_toml_configuration(tmp_path: Path) -> None:
    need_tool("iscsi-inq")
    user_file = secret_file(tmp_path, "alice.chap", SECRET)
    target_file = secret_file(tmp_path, "ctl.chap", TARGET_SECRET)
    config = tmp_path / "controller.toml"
    config.write_text(
        "[[volume]]\n"
        'name = "sec"\nsize = "8M"\n'
        f'chap = {{ user = "alice", secret_file = "{user_file}" }}\n'
        f'mutual_chap = {{ user = "ctl", secret_file = "{target_file}" }}\n'
    )
    with controller(tmp_path / "ctl", "--config", str(config), volumes=1) as ctl:
        ok = inq(ctl, "sec", SECRET, TARGET_SECRET)
        assert ok.returncode == 0, ok.stderr
        assert inq(ctl, "sec", "not-the-secret-000", TARGET_SECRET).returncode != 0
        assert_secrets_hidden(ctl.proc.popen.pid, ctl.proc.log_text(), SECRET, TARGET_SECRET)


def test_a_host_reads_its_chap_secrets_from_files(tmp_path: Path) -> None:
    user_file = secret_file(tmp_path, "alice.chap", SECRET)
    target_file = secret_file(tmp_path, "ctl.chap", TARGET_SECRET)
    # the controller has the secrets themselves; the host reads them from its files
    with controller(tmp_path / "ctl", "--volume", "a:8M", "--chap", f"a=alice:{SECRET}",
                    "--mutual-chap", f"a=ctl:{TARGET_SECRET}") as ctl:
        host = start_difs("host", "--nbd", f"127.0.0.1:{free_port()}", "--app", f"a={ctl.url('a')}",
                          "--channels", "plain", "--chap", f"alice:@{user_file}",
                          "--mutual-chap", f"ctl:@{target_file}", "--log-level", "debug")
        try:
            host.wait_for_lines(1, "nbd://")
            ups = [line for line in host.log_text().splitlines() if "path up" in line]
            assert ups and "'mutual CHAP'" in ups[0], host.log_text()[-2000:]
            assert_secrets_hidden(host.popen.pid, host.log_text(), SECRET, TARGET_SECRET)
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]


def test_an_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.chap"
    out = run([sys.executable, "-m", "difs.cli.main", "controller", "--data-dir",
               str(tmp_path / "ctl"), "--volume", "v:8M", "--chap", f"v=alice:@{missing}"],
              check=False)
    assert out.returncode == 2
    assert str(missing) in out.stderr and "cannot read the secret file" in out.stderr
