"""The persisted manager-mode state (controller/state.py) and the link that uses it: written
atomically 0600 and only on change, read back exactly, refused as a whole when torn, edited or
another controller's; at start without the manager the link serves it, with the manager the
manager's view wins and is saved."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from difs.controller.config import ControllerConfig
from difs.controller.errors import StateError
from difs.controller.manager_link import ControllerManagerLink
from difs.controller.server import Controller
from difs.controller.state import ServedState, encode_state
from difs.nodelink.client import ManagerUnreachable

HOST = "iqn.2026-11.io.difs.test:h1"
POLICY = {"integrity": {"header_digest": True, "data_digest": True}}


def volume(name: str, lun: int, *, initiators: list[str] | None = None) -> dict:
    return {"id": f"id-{name}", "name": name, "application": "app1", "container": "default",
            "size_bytes": 1 << 20, "lun": lun, "block_size": 512, "policy": POLICY,
            "policy_version": 3, "service_class": 5,
            "allowed_initiators": [HOST] if initiators is None else initiators}


def test_saved_state_reads_back_private_and_is_rewritten_only_on_change(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = ServedState(tmp_path, controller="ctl1")
        assert state.load() is None
        vols = [volume("v1", 0), volume("v2", 1, initiators=[])]
        assert state.save(vols)
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert not state.save(vols)  # unchanged: not written again
    assert ServedState(tmp_path, controller="ctl1").load() == vols
    again = ServedState(tmp_path, controller="ctl1")
    again.load()
    assert not again.save(vols) and again.save(vols[:1])


@pytest.mark.parametrize("damage, reason", [
    (lambda t: t[: len(t) // 2], "not JSON"),  # torn
    (lambda t: t.replace('"lun": 1', '"lun": 7'), "checksum mismatch"),  # edited
    (lambda t: t.replace('"sha256"', '"sha"'), "no checksum"),
    (lambda t: "", "not JSON"),
])
def test_a_torn_or_edited_state_is_refused_as_a_whole(tmp_path: Path, damage, reason) -> None:
    state = ServedState(tmp_path, controller="ctl1")
    state.save([volume("v1", 0), volume("v2", 1)])
    state.path.write_text(damage(state.path.read_text()))
    with pytest.raises(StateError, match=reason) as err:
        ServedState(tmp_path, controller="ctl1").load()
    assert str(state.path) in str(err.value)


def test_a_state_of_another_controller_or_with_a_bad_volume_is_refused(tmp_path: Path) -> None:
    ServedState(tmp_path, controller="ctl1").save([volume("v1", 0)])
    with pytest.raises(StateError, match="written for controller 'ctl1', not 'ctl2'"):
        ServedState(tmp_path, controller="ctl2").load()
    # well-formed checksum over volumes that cannot be served: refused all the same
    for bad in ({**volume("v1", 0), "name": "../etc"}, {**volume("v1", 0), "lun": -1},
                {**volume("v1", 0), "size_bytes": "1M"}, "v1"):
        (tmp_path / "manager-state.json").write_text(encode_state("ctl1", [bad]))
        with pytest.raises(StateError, match="volume"):
            ServedState(tmp_path, controller="ctl1").load()
    twice = [volume("v1", 0), volume("v2", 0)]  # two volumes at one LUN of one view
    (tmp_path / "manager-state.json").write_text(encode_state("ctl1", twice))
    with pytest.raises(StateError, match="listed twice"):
        ServedState(tmp_path, controller="ctl1").load()


class FakeManager:
    """The manager's client: answers with ``volumes``, or is unreachable when None."""

    def __init__(self, volumes: list[dict] | None) -> None:
        self.volumes = volumes

    def _answer(self, value):
        if self.volumes is None:
            raise ManagerUnreachable("http://127.0.0.1:9", ConnectionRefusedError())
        return value

    def advertise(self, node, adv):
        return self._answer({})

    def controller_volumes(self, node):
        return self._answer(json.loads(json.dumps(self.volumes)))

    def close(self) -> None:
        pass


def start(data_dir: Path, manager: FakeManager) -> tuple[Controller, ControllerManagerLink]:
    ctl = Controller(ControllerConfig(name="ctl1", data_dir=data_dir, nop_interval=None))
    ep = ctl.enable_endpoint()
    link = ControllerManagerLink(ctl, manager, node="ctl1")  # type: ignore[arg-type]
    asyncio.run(link.first_round())
    return ctl, ep


def served(ep) -> dict[str, tuple[int, str | None]]:
    return {name: (v.lun, v.initiator) for name, v in ep.volumes.items()}


def test_without_the_manager_the_link_serves_the_persisted_state(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="difs.controller")
    manager = FakeManager([volume("v1", 0), volume("v2", 1, initiators=[])])
    ctl, ep = start(tmp_path, manager)
    assert served(ep) == {"v1": (0, HOST), "v2": (1, None)}
    ep.close()
    # restart, manager away: the same volumes, LUNs, views and enforced policy
    manager.volumes = None
    ctl, ep = start(tmp_path, manager)
    assert served(ep) == {"v1": (0, HOST), "v2": (1, None)}
    assert ep.views[HOST].luns.keys() == {0}
    policy = ctl.enforcement.policies[ep.volumes["v1"].lu]
    assert policy.session_verdict(0) in ("header_digest", "data_digest")  # plain: refused
    assert "serving from the persisted state" in caplog.text
    ep.close()
    # restart, manager back with another view: the manager wins and is saved
    manager.volumes = [volume("v2", 4)]
    ctl, ep = start(tmp_path, manager)
    assert served(ep) == {"v2": (4, HOST)}
    assert ServedState(tmp_path, controller="ctl1").load() == manager.volumes
    ep.close()


def test_a_refused_state_serves_nothing_and_says_why(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="difs.controller")
    ctl, ep = start(tmp_path, FakeManager([volume("v1", 0)]))
    ep.close()
    path = tmp_path / "manager-state.json"
    path.write_text(path.read_text().replace(HOST, "iqn.2026-11.io.evil:x"))
    ctl, ep = start(tmp_path, FakeManager(None))
    assert ep.volumes == {} and ep.views == {}
    [line] = [r for r in caplog.records if r.getMessage().startswith("persisted state refused")]
    assert line.levelno == logging.ERROR
    ep.close()
