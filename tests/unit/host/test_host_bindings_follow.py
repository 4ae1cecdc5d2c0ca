"""The host's persisted bindings (difs.host.state) and how the manager link follows bindings
(difs.host.manager_link) with a stand-in host: each binding in its own task, faults kept to it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from difs.host.manager_link import FAILED, RUNNING, STARTING, HostManagerLink
from difs.host.state import BindingStore, StateRefused
from difs.host.errors import ProtectionUnavailable

BINDING = {
    "application": "app1", "host": "host1", "initiator_iqn": "iqn.2026-11.io.difs:host1",
    "policy": None, "policy_version": 1, "service_class": 0,
    "volumes": [{"volume_id": "v1", "name": "app1-0", "controller": "ctl1", "container": "pool",
                 "target_iqn": "iqn.2026-11.io.difs:ctl1", "lun": 0, "size_bytes": 4096,
                 "portals": [{"address": "127.0.0.1", "port": 3260}]}],
    "state": "running", "state_reason": None,
}


def store(tmp_path: Path, **kw: str) -> BindingStore:
    return BindingStore(tmp_path / "state", manager=kw.get("manager", "http://m"),
                        node=kw.get("node", "host1"))


def test_saved_bindings_load_back_without_report_fields(tmp_path: Path):
    s = store(tmp_path)
    assert s.load() is None
    s.save([BINDING])
    loaded = s.load()
    assert loaded == [{k: v for k, v in BINDING.items() if not k.startswith("state")}]
    assert s.path.stat().st_mode & 0o777 == 0o600
    assert (s.directory / "state.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in s.directory.iterdir()] != [] and not list(s.directory.glob("*.tmp"))


@pytest.mark.parametrize("damage, words", [
    (lambda text: text.replace('"lun": 0', '"lun": 1'), "failed its integrity check"),
    (lambda text: text[: len(text) // 2], "not a whole bindings file"),
    (lambda text: "", "not a whole bindings file"),
    (lambda text: json.dumps({**json.loads(text), "format": 2}), "format"),
])
def test_a_damaged_file_is_refused_whole(tmp_path: Path, damage, words):
    s = store(tmp_path)
    s.save([BINDING])
    s.path.write_text(damage(s.path.read_text()))
    with pytest.raises(StateRefused, match=words):
        s.load()


def test_a_missing_or_bad_key_or_another_owner_is_refused(tmp_path: Path):
    s = store(tmp_path)
    s.save([BINDING])
    with pytest.raises(StateRefused, match="written for node 'host1'"):
        store(tmp_path, node="host2").load()
    with pytest.raises(StateRefused, match="of manager"):
        store(tmp_path, manager="http://other").load()
    (s.directory / "state.key").write_text("zz\n")
    with pytest.raises(StateRefused, match="32-byte hex key"):
        s.load()
    (s.directory / "state.key").unlink()
    with pytest.raises(StateRefused, match="missing"):
        s.load()


# --- the link following bindings, with a stand-in host ----------------------------------------


class FakeApp:
    def __init__(self, version: int) -> None:
        self.policy_version = version


class FakeHost:
    """Starts ``app1`` at once; ``slow`` waits until released; ``update_policy`` of ``pi`` raises."""

    def __init__(self) -> None:
        self.apps: dict[str, FakeApp] = {}
        self.release = asyncio.Event()
        self.updates: list[tuple[str, int]] = []

    async def start_app(self, name: str, **kw: Any) -> None:
        if name == "slow":
            await self.release.wait()
            raise OSError("no satisfying path within 30s")
        self.apps[name] = FakeApp(kw["policy_version"])

    def update_policy(self, name: str, *, version: int, **kw: Any) -> None:
        if kw["policy_name"] == "v9":
            raise ProtectionUnavailable("volume app1-0 has no PI")
        self.apps[name].policy_version = version
        self.updates.append((name, version))

    async def stop_app(self, name: str) -> None:
        del self.apps[name]


def binding(name: str, version: int = 1) -> dict[str, Any]:
    return {**BINDING, "application": name, "policy_version": version}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_start_failing_within_the_grace_stays_starting_and_is_retried():
    async def scenario() -> None:
        host = FakeHost()
        link = HostManagerLink(host, client=None, node="host1")  # type: ignore[arg-type]
        link._push_states_soon = lambda: None
        host.release.set()
        await link.sync_bindings([binding("slow")])
        await settle()
        f = link.followers["slow"]
        assert (f.state, f.reason) == (STARTING, "retrying: no satisfying path within 30s")
        link.start_grace = 0  # the next attempt (1 s later, by the start task itself) fails for good
        await asyncio.wait_for(f.task, 5)
        assert (f.state, f.reason) == (FAILED, "no satisfying path within 30s")
        await link.stop_followers()

    asyncio.run(scenario())


def test_one_binding_waiting_blocks_nothing_and_a_policy_fault_stays_with_its_binding(caplog):
    async def scenario() -> None:
        host = FakeHost()
        link = HostManagerLink(host, client=None, node="host1")  # type: ignore[arg-type]
        link._push_states_soon = lambda: None  # no manager here
        link.start_grace = 0  # a failed start is failed at once
        await asyncio.wait_for(link.sync_bindings([binding("slow"), binding("app1")]), 1)
        await settle()
        states = {b["application"]: b["state"] for b in link.binding_states()["bindings"]}
        assert states == {"slow": STARTING, "app1": RUNNING}

        await link.sync_bindings([binding("slow"), binding("app1", 9)])  # v9 cannot be applied
        await link.sync_bindings([binding("slow"), binding("app1", 9)])  # not retried
        f = link.followers["app1"]
        assert f.state == FAILED and "policy version 9 cannot be applied" in f.reason
        assert "still running with version 1" in f.reason and host.apps["app1"].policy_version == 1
        await link.sync_bindings([binding("slow"), binding("app1", 10)])
        assert link.followers["app1"].state == RUNNING and host.updates == [("app1", 10)]

        host.release.set()
        await settle()
        assert (link.followers["slow"].state, link.followers["slow"].reason) == (
            FAILED, "no satisfying path within 30s")
        await link.sync_bindings([binding("app1", 10)])
        assert set(link.followers) == {"app1"}
        await link.stop_followers()

    caplog.set_level("ERROR", logger="difs.host")
    asyncio.run(scenario())
    failed = [r.getMessage() for r in caplog.records if "binding failed" in r.getMessage()]
    assert len(failed) == 2, failed  # one line per binding and reason


def test_the_host_advertises_only_the_chap_it_has_credentials_for() -> None:
    from difs.host.manager_link import auth_methods
    from difs.host.pathgroup import ChapSecrets, CredentialBook, parse_chap

    alice, ctl = parse_chap("alice:secret-0123456789"), parse_chap("ctl:secret-9876543210")
    assert auth_methods(CredentialBook()) == []
    assert auth_methods(CredentialBook(default=ChapSecrets(alice))) == ["chap"]
    assert auth_methods(CredentialBook(default=ChapSecrets(alice, ctl))) == ["chap", "mutual_chap"]
    assert auth_methods(CredentialBook(per_target={"iqn.x": ChapSecrets(alice, ctl)})) == [
        "chap", "mutual_chap"]
