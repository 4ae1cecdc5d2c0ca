"""PI-formatted volumes on disk: created with a type, kept with it, never reformatted; in
manager mode formatted from the mirrored policy and expecting the application's tag; the
controller advertises PI types 1 and 3; the flip tool corrupts exactly one stored bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from difs.controller.config import ControllerConfig, policy_pi_type, resolve_policy
from difs.controller.endpoint import ProtocolEndpoint, application_tag
from difs.controller.enforcement import Enforcement
from difs.controller.manager_link import ControllerManagerLink
from difs.controller.server import Controller
from difs.controller.tools import flip, main
from difs.controller.volumes import VolumeDirectory, VolumeError
from difs.integrity import PiCheckError
from difs.storage.pistore import PiStore


def test_pi_volume_files_and_format_are_fixed_at_creation(tmp_path: Path) -> None:
    d = VolumeDirectory(tmp_path)
    meta = d.ensure("v", 1 << 20, pi_type=3, app_tag=0x42)
    assert (meta.pi_type, meta.app_tag) == (3, 0x42)
    assert d.pi_path("v").stat().st_size == (1 << 20) // 512 * 8
    assert d.ensure("v", None).pi_type == 3  # kept as it is
    with pytest.raises(VolumeError, match="PI format is fixed"):
        d.ensure("v", None, pi_type=1)
    with pytest.raises(VolumeError, match="PI format is fixed"):
        d.ensure("w", 1 << 20) and d.ensure("w", None, pi_type=1)
    with pytest.raises(VolumeError, match="PI type must be 1 or 3"):
        d.ensure("x", 1 << 20, pi_type=2)
    with pytest.raises(VolumeError, match="application tag"):
        d.ensure("y", 1 << 20, pi_type=1, app_tag=0xFFFF)
    store = d.open_store(d.load("v"))
    try:
        assert isinstance(store, PiStore) and store.pi_type == 3 and store.app_tag == 0x42
    finally:
        store.close()
    thick = d.ensure("t", 1 << 20, pi_type=1, thin=False)
    assert d.pi_path("t").stat().st_blocks * 512 >= thick.num_blocks * 8


def test_policies_resolve_to_stored_services_and_pi_types(tmp_path: Path) -> None:
    services, info = resolve_policy("gold")
    assert policy_pi_type(services) == 1 and info == {"policy_name": "gold", "policy_version": 1}
    assert policy_pi_type(resolve_policy("silver")[0]) == 0
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps({"name": "p3", "version": 4,
                               "services": {"integrity": {"protection_information": 3}}}))
    services, info = resolve_policy(str(doc))
    assert policy_pi_type(services) == 3 and info["policy_version"] == 4
    from difs.controller.config import ConfigError
    with pytest.raises(ConfigError, match="unknown tier"):
        resolve_policy("platinum")
    doc.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        resolve_policy(str(doc))


def test_endpoint_formats_from_the_mirrored_policy_and_expects_the_app_tag(tmp_path: Path):
    enforcement = Enforcement()
    ep = ProtocolEndpoint(name="iqn.2026-11.io.difs:ctl", directory=VolumeDirectory(tmp_path),
                          enforcement=enforcement)
    policy = {"integrity": {"header_digest": False, "protection_information": 3},
              "security": None}
    meta = ep.prepare(name="vol-a", size=1 << 20, policy=policy, policy_version=2,
                      allowed_initiators=["iqn.h"], application="app1")
    assert meta.pi_type == 3 and meta.app_tag == application_tag("app1")
    assert meta.extra == {"policy_version": 2, "application": "app1"}
    ep.place(meta, lun=1, initiator="iqn.h")
    lu = ep.volumes["vol-a"].lu
    assert lu.pi_type == 3 and lu.store.app_tag == application_tag("app1")
    policy_obj = enforcement.policies[lu]
    assert policy_obj.application == "app1" and policy_obj.pi_format_ok
    # an existing volume keeps its format; its I/O is then refused (pi_format)
    plain = ep.prepare(name="vol-b", size=1 << 20, policy=None, policy_version=1,
                       allowed_initiators=[])
    assert plain.pi_type == 0
    again = ep.prepare(name="vol-b", size=1 << 20, policy={"integrity": {
        "protection_information": 1}}, policy_version=2, allowed_initiators=[])
    assert again.pi_type == 0
    ep.place(again, lun=2, initiator=None)
    assert not enforcement.policies[ep.volumes["vol-b"].lu].pi_format_ok
    # a stored policy that does not validate fails closed
    broken = ep.prepare(name="vol-c", size=1 << 20, policy={"integrity": {"crc": True}},
                        policy_version=1, allowed_initiators=[])
    ep.place(broken, lun=3, initiator=None)
    p = enforcement.policies[ep.volumes["vol-c"].lu]
    assert "crc" in p.unreadable and p.session_verdict(0xFF) == "policy_unreadable"
    ep.retire("vol-a")
    assert lu not in enforcement.policies
    ep.close()


def test_application_tag_matches_the_hosts_contract() -> None:
    from difs.host.app_pi import application_tag as host_tag

    for name in ("app1", "app2", "db", "a" * 63):
        assert application_tag(name) == host_tag(name)


def test_advertisement_offers_pi_types(tmp_path: Path) -> None:
    ctl = Controller(ControllerConfig(name="c1", data_dir=tmp_path, nop_interval=None))
    ctl.enable_endpoint()
    link = ControllerManagerLink(ctl, client=None, node="c1")  # type: ignore[arg-type]
    ad = link.advertisement()
    assert [int(t) for t in ad.services.integrity.pi_types] == [1, 3]
    assert [int(t) for t in ad.containers[0].pi_types] == [1, 3]
    # honest: the protocol endpoint logs initiators in without CHAP, so it offers none
    assert ad.services.security.authentication == []


def test_flip_tool(tmp_path: Path, capsys) -> None:
    d = VolumeDirectory(tmp_path)
    meta = d.ensure("v", 1 << 20, pi_type=1)
    store = d.open_store(meta)
    store.pwrite(4096, b"\x0f" * 512)
    store.flush()
    store.close()
    out = flip(tmp_path, "v", 4096 + 3, 7)
    assert "LBA 8" in out and "0f -> 8f" in out
    store = d.open_store(meta)
    with pytest.raises(PiCheckError) as exc:
        store.pread(4096, 512)
    assert exc.value.lba == 8 and exc.value.kind == "guard"
    store.close()
    assert main(["flip", "--data-dir", str(tmp_path), "--volume", "v", "--offset",
                 str(1 << 20)]) == 2
    assert "outside" in capsys.readouterr().err
    d.ensure("plain", 1 << 20)
    assert main(["flip", "--data-dir", str(tmp_path), "--volume", "plain", "--offset", "0",
                 "--pi"]) == 2
    assert main(["flip", "--data-dir", str(tmp_path), "--volume", "v", "--offset", "0x40",
                 "--pi"]) == 0
    assert "LBA 8" in capsys.readouterr().out
