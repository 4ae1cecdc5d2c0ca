"""Enforcement at the controller: every I/O is judged against its volume's policy and the
session it arrived on; violations are CHECK CONDITION DATA PROTECT 74h/71h, counted per
session x volume and per volume, logged with application, volume and path."""

from __future__ import annotations

import json
import logging
import struct

import pytest
from adapter_client import Client, lu_of, make_controller, run, sense_code

from difs.controller.config import Chap
from difs.controller.enforcement import Enforcement, VolumePolicy, session_flags
from difs.controller.metrics import ControllerCollector
from difs.controller.volumes import VolumeDirectory
from difs.integrity import generate, interleave
from difs.iscsi.config import ChapCredentials
from difs.policy.fast import DATA_DIGEST, HEADER_DIGEST

INIT = "iqn.2024-01.test:enforce"
GOOD, CHECK_CONDITION = 0x00, 0x02
DENIED = (0x07, 0x74, 0x71)
TUR = bytes(6)
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
REPORT_LUNS = bytes((0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0))
READ_CAPACITY16 = bytes((0x9E, 0x10)) + bytes(8) + struct.pack(">I", 32) + bytes(2)


def rw16(op: int, lba: int, n: int, *, protect: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, protect << 5, lba, n, group, 0)


def read16(lba, n, **kw):
    return rw16(0x88, lba, n, **kw)


def write16(lba, n, **kw):
    return rw16(0x8A, lba, n, **kw)


def policy_file(tmp_path, name: str, services: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "services": services}))
    return str(path)


def ready(client: Client) -> Client:
    client.command(TUR)  # the power-on unit attention (or a refusal: both consume nothing)
    return client


def stats_of(ctl, client: Client):
    return ctl.enforcement.stats_for("vol", client.conn.session)


def test_data_digest_policy_refuses_a_session_without_digests(tmp_path, caplog):
    async def main():
        ctl = make_controller(tmp_path / "d", policy="silver")
        plain = Client(ctl, INIT)
        with caplog.at_level(logging.WARNING, logger="difs.controller"):
            done = plain.command(read16(0, 8), expected_in=4096)
        assert done.status == CHECK_CONDITION and sense_code(done) == DENIED
        assert sense_code(plain.command(rw16(0x93, 0, 1), data_out=bytes(512))) == DENIED
        get_lba_status = bytes((0x9E, 0x12)) + bytes(8) + struct.pack(">I", 32) + bytes(2)
        assert sense_code(plain.command(get_lba_status, expected_in=32)) == DENIED
        # commands that only describe the logical unit still work
        assert plain.command(TUR).status == CHECK_CONDITION  # the power-on unit attention
        for cdb, size in ((TUR, 0), (INQUIRY, 96), (REPORT_LUNS, 64), (READ_CAPACITY16, 32)):
            assert plain.command(cdb, expected_in=size).status == GOOD
        stats = stats_of(ctl, plain)
        assert stats.rejected == {"data_digest": 3} and stats.commands == 8
        assert ctl.enforcement.volume_rejections["vol"] == {"data_digest": 3}
        line = next(r for r in caplog.records if r.getMessage() == "I/O refused")
        fields = line.difs_fields
        assert fields["volume"] == "vol" and fields["reason"] == "data_digest"
        assert fields["initiator_port"].startswith(INIT + ",i,0x")
        assert fields["channel"] == 0x0001 and fields["application"] == "vol"
        assert "DataDigest=None" in fields["why"]
        # a session with both digests is served
        digests = ready(Client(ctl, INIT, isid=0x400000000002, digests=True))
        done = digests.command(write16(0, 8), data_out=bytes(range(256)) * 16)
        assert done.status == GOOD
        assert bytes(digests.command(read16(0, 8), expected_in=4096).data) == \
            bytes(range(256)) * 16
        ok = stats_of(ctl, digests)
        assert ok.rejected == {} and ok.write_bytes == 4096 and ok.read_bytes == 4096
        assert (ok.channel, ok.header_digest, ok.data_digest) == (2, True, True)

    run(main())


def test_chap_and_mutual_chap_policies(tmp_path):
    async def main():
        chap_only = policy_file(tmp_path, "chap", {"security": {"authentication": "chap"}})
        ctl = make_controller(tmp_path / "c", policy=chap_only)
        anon = Client(ctl, INIT)
        assert sense_code(anon.command(read16(0, 1), expected_in=512)) == DENIED
        assert stats_of(ctl, anon).rejected == {"chap": 1}

        mutual = policy_file(tmp_path, "mutual", {"security": {"authentication": "mutual_chap"}})
        ctl = make_controller(tmp_path / "m", policy=mutual,
                              chap=Chap(user="u", secret="initiator-secret"),
                              mutual_chap=Chap(user="t", secret="target-secret-1"))
        creds = ChapCredentials("u", "initiator-secret")
        one_way = Client(ctl, INIT, chap=creds)
        assert session_flags(one_way.conn.session) & 0x08
        assert sense_code(one_way.command(read16(0, 1), expected_in=512)) == DENIED
        assert stats_of(ctl, one_way).rejected == {"mutual_chap": 1}
        both = ready(Client(ctl, INIT, isid=0x400000000003, chap=creds,
                            mutual_chap=ChapCredentials("t", "target-secret-1")))
        assert both.command(read16(0, 1), expected_in=512).status == GOOD

    run(main())


PI_POLICY = {"integrity": {"protection_information": 1}}


def test_pi_policy_creates_a_pi_volume_and_refuses_protect_zero_reads_and_writes(tmp_path):
    async def main():
        ctl = make_controller(tmp_path / "p", policy=policy_file(tmp_path, "pi", PI_POLICY),
                              app_tag=0x0BAD)
        meta = next(iter(ctl.volumes.values())).meta
        assert meta.pi_type == 1 and meta.app_tag == 0x0BAD
        c = ready(Client(ctl, INIT))
        data = bytes(range(256)) * 8
        assert sense_code(c.command(write16(0, 4), data_out=data[:2048])) == DENIED
        assert sense_code(c.command(read16(0, 4), expected_in=2048)) == DENIED
        assert sense_code(c.command(bytes((0x08, 0, 0, 0, 4, 0)), expected_in=2048)) == DENIED
        assert stats_of(ctl, c).rejected == {"pi_required": 3}
        pi = generate(data[:2048], lba=0, pi_type=1, app_tag=0x0BAD)
        done = c.command(write16(0, 4, protect=1), data_out=bytes(interleave(data[:2048], pi)))
        assert done.status == GOOD
        back = c.command(read16(0, 4, protect=1), expected_in=4 * 520)
        assert back.status == GOOD and bytes(back.data) == bytes(interleave(data[:2048], pi))
        # commands without a data transfer to the application are not refused
        assert c.command(rw16(0x8F, 0, 4)).status == GOOD  # VERIFY(16), stored PI checked
        assert c.command(rw16(0x93, 8, 4), data_out=bytes(512)).status == GOOD  # WRITE SAME
        stats = stats_of(ctl, c)
        assert stats.pi_checked >= 8 and stats.pi_generated == 4
        # a wrong application tag is SBC-4's 10h/02h, counted as a refusal too
        wrong = generate(data[:512], lba=1, pi_type=1, app_tag=0x0BAE)
        done = c.command(write16(1, 1, protect=1), data_out=bytes(interleave(data[:512], wrong)))
        assert sense_code(done) == (0x0B, 0x10, 0x02)
        assert stats.rejected["app_tag"] == 1 and stats.pi_failed["app"] == 1

    run(main())


def test_volume_without_the_pi_format_its_policy_needs(tmp_path):
    async def main():
        VolumeDirectory(tmp_path / "f").ensure("vol", 4 << 20, pi_type=1)
        ctl = make_controller(tmp_path / "f",
                              policy=policy_file(tmp_path, "pi3",
                                                 {"integrity": {"protection_information": 3}}))
        c = ready(Client(ctl, INIT))
        assert sense_code(c.command(read16(0, 1), expected_in=512)) == DENIED
        assert c.command(INQUIRY, expected_in=96).status == GOOD
        assert stats_of(ctl, c).rejected == {"pi_format": 1}

    run(main())


@pytest.mark.parametrize("group, ok", [(0, True), (0x03, True), (0x07, True), (0x01, False),
                                       (0x02, False), (0x04, False)])
def test_service_class_in_group_number_must_cover_the_volume_class(tmp_path, group, ok):
    async def main():
        ctl = make_controller(tmp_path, policy="silver")  # class 3: both digests
        c = ready(Client(ctl, INIT, digests=True))
        done = c.command(read16(0, 1, group=group), expected_in=512)
        assert (done.status == GOOD) is ok
        if not ok:
            assert sense_code(done) == DENIED
            assert stats_of(ctl, c).rejected == {"service_class": 1}

    run(main())


def test_no_policy_means_no_refusal_and_protect_zero_on_a_pi_volume(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, pi_type=3)
        c = ready(Client(ctl, INIT))
        assert c.command(write16(0, 2, group=0x3F), data_out=bytes(1024)).status == GOOD
        assert c.command(read16(0, 2), expected_in=1024).status == GOOD
        assert stats_of(ctl, c).rejected == {}
        assert lu_of(ctl).pi_type == 3

    run(main())


def test_policy_change_recompiles_the_guard(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        c = ready(Client(ctl, INIT))
        assert c.command(read16(0, 1), expected_in=512).status == GOOD
        vol = next(iter(ctl.volumes.values()))
        from dataclasses import replace

        from difs.controller.config import resolve_policy
        services, info = resolve_policy("silver")
        ctl.enforcement.register(vol.lu, replace(vol.meta, policy=services,
                                                 extra={**info, "policy_version": 2}))
        assert sense_code(c.command(read16(0, 1), expected_in=512)) == DENIED
        ctl.enforcement.register(vol.lu, replace(vol.meta, policy=None,
                                                 extra={"policy_version": 3}))
        assert c.command(read16(0, 1), expected_in=512).status == GOOD

    run(main())


def test_descriptor_sense_when_the_unit_uses_it(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy="silver")
        lu_of(ctl).d_sense = True
        done = Client(ctl, INIT).command(read16(0, 1), expected_in=512)
        s = bytes(done.sense)
        assert s[0] == 0x72 and (s[1], s[2], s[3]) == DENIED

    run(main())


def test_metrics_collector_reads_live_counters(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy="silver", pi_type=1)
        plain = Client(ctl, INIT, isid=0x400000000005)
        plain.command(read16(0, 1), expected_in=512)
        good = ready(Client(ctl, INIT, isid=0x400000000007, digests=True))
        good.command(write16(0, 8), data_out=bytes(4096))
        good.command(read16(0, 8), expected_in=4096)
        samples = {}
        for family in ControllerCollector(ctl).collect():
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        path5 = {"volume": "vol", "initiator": INIT, "channel": "5",
                 "header_digest": "false", "data_digest": "false"}
        path7 = {**path5, "channel": "7", "header_digest": "true", "data_digest": "true"}

        def get(name, labels):
            return samples[(name, tuple(sorted(labels.items())))]

        assert get("difs_controller_rejections_total", {**path5, "reason": "data_digest"}) == 1
        assert get("difs_controller_commands_total", path7) == 3
        assert get("difs_controller_bytes_total", {**path7, "direction": "write"}) == 4096
        assert get("difs_controller_bytes_total", {**path7, "direction": "read"}) == 4096
        assert get("difs_controller_pi_generated_blocks_total", path7) == 8
        assert get("difs_controller_pi_checked_blocks_total", path7) == 8
        assert get("difs_controller_volume_rejections_total",
                   {"volume": "vol", "reason": "data_digest"}) == 1
        digest_labels = {"target": ctl.config.target_name("vol"), "initiator": INIT,
                         "channel": "7", "header_digest": "true", "data_digest": "true"}
        assert get("difs_controller_digests_total", digest_labels) > 0
        info = [k for k in samples if k[0] == "difs_controller_volume_info"]
        assert dict(info[0][1])["pi_type"] == "1"
        # a closed connection's digest work stays in the totals
        before = get("difs_controller_digests_total", digest_labels)
        good.drop()
        import asyncio
        await asyncio.sleep(0)
        after = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in ControllerCollector(ctl).collect() for s in f.samples}
        assert after[("difs_controller_digests_total",
                      tuple(sorted(digest_labels.items())))] >= before

    run(main())


def test_volume_policy_compiles_once_and_reports_session_reasons_in_order():
    class Meta:
        name = "v"
        pi_type = 0
        policy = {"integrity": {"header_digest": True, "data_digest": True},
                  "security": {"authentication": "chap"}}
        extra = {"policy_version": 4, "application": "db"}

    p = VolumePolicy.from_meta(Meta)
    assert (p.application, p.version, p.service_class) == ("db", 4, 0x0B)
    assert p.session_verdict(0) == "data_digest"
    assert p.session_verdict(DATA_DIGEST) == "header_digest"
    assert p.session_verdict(DATA_DIGEST | HEADER_DIGEST) == "chap"
    assert p.session_verdict(DATA_DIGEST | HEADER_DIGEST | 0x08) is None
    e = Enforcement()
    lu = object()
    first = e.register(lu, Meta)
    assert e.register(lu, Meta) is first  # same version and content: not recompiled


def test_a_lun_leaving_the_view_mid_session_is_a_check_condition_not_a_crash(tmp_path):
    """Issue 17 finding 7: the session had a guard for LUN 0 (its volume has a policy); the
    LUN then leaves the target's view (unbind) while the initiator keeps sending. The next
    command must be answered LOGICAL UNIT NOT SUPPORTED on the same connection, and the
    connection must go on serving; before, a stale guard made ``lu.pi_type`` raise
    AttributeError out of the adapter and the transport dropped the connection."""
    async def main():
        ctl = make_controller(tmp_path / "u", policy="bronze")
        client = Client(ctl, INIT)
        client.command(TUR)  # the power-on unit attention
        assert client.command(read16(0, 8), expected_in=4096).status == GOOD
        target = next(iter(ctl.volumes.values())).scsi
        lu = target.remove_lun(0)
        gone = client.command(read16(0, 8), expected_in=4096)
        assert gone.status == CHECK_CONDITION and sense_code(gone) == (0x05, 0x25, 0x00)
        gone = client.command(rw16(0x8A, 0, 8), data_out=bytes(4096))
        assert gone.status == CHECK_CONDITION and sense_code(gone) == (0x05, 0x25, 0x00)
        assert not client.transport.closing
        target.add_lun(0, lu)  # back in the view: served again, with a fresh guard
        for _ in range(2):  # REPORTED LUNS DATA HAS CHANGED may come first
            done = client.command(read16(0, 8), expected_in=4096)
            if done.status == GOOD:
                break
        assert done.status == GOOD and not client.transport.closing
    run(main())
