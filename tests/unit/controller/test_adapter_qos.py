"""The QoS hook of the controller adapter: a QoS volume's commands wait for the scheduler,
a full queue answers TASK SET FULL, an aborted queued command never runs, a volume without
QoS bypasses the scheduler, and a policy change applies to the next command."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import replace

from adapter_client import Client, make_controller, run

from difs.controller.metrics import ControllerCollector
from difs.iscsi.constants import TmfFunction, TmfResponse
from difs.iscsi.initiator_events import CommandComplete

INIT = "iqn.2024-01.test:qos"
GOOD, TASK_SET_FULL = 0x00, 0x28
TUR = bytes(6)


def rw16(op: int, lba: int, n: int) -> bytes:
    return struct.pack(">BBQIBB", op, 0, lba, n, 0, 0)


def policy_file(tmp_path, qos: dict) -> str:
    path = tmp_path / "qos.json"
    path.write_text(json.dumps({"name": "q", "services": {"qos": qos}}))
    return str(path)


async def wait_for(client: Client, itts: set[int], deadline: float = 5.0) -> dict[int, object]:
    """Pump until every ITT in ``itts`` completed (the loop runs the QoS timer)."""
    done: dict[int, object] = {}
    end = time.monotonic() + deadline
    while len(done) < len(itts):
        assert time.monotonic() < end, f"not completed: {itts - set(done)}"
        await asyncio.sleep(0.002)
        client.pump()
        for event in list(client.events):
            if isinstance(event, CommandComplete) and event.itt in itts:
                done[event.itt] = event
                client.events.remove(event)
    return done


def test_limited_volume_is_paced_and_a_full_queue_answers_task_set_full(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy=policy_file(tmp_path, {"limit_iops": 50}))
        ctl.qos.scheduler.max_queue = 3
        c = Client(ctl, INIT)
        c.command(TUR)
        start = time.monotonic()
        itts = [c.core.submit_command(0, rw16(0x8A, i, 1), data_out=bytes([i]) * 512)
                for i in range(6)]
        done = await wait_for(c, set(itts))
        elapsed = time.monotonic() - start
        statuses = [done[i].status for i in itts]
        # one runs at once, three wait their turn at 50 IOPS, two find the queue full
        assert statuses.count(GOOD) == 4 and statuses.count(TASK_SET_FULL) == 2, statuses
        assert elapsed >= 3 / 50 * 0.9
        client = ctl.qos.scheduler.clients["vol"]
        assert client.refused == 2 and client.delayed == 3 and client.waited > 0
        text = "".join(str(m) for m in ControllerCollector(ctl).collect())
        assert "difs_controller_qos_delayed" in text and "difs_controller_qos_refused" in text

    run(main())


def test_an_aborted_queued_write_never_runs(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy=policy_file(tmp_path, {"limit_iops": 20}))
        c = Client(ctl, INIT)
        c.command(TUR)
        first = c.core.submit_command(0, rw16(0x8A, 0, 1), data_out=b"\x01" * 512)
        queued = c.core.submit_command(0, rw16(0x8A, 8, 1), data_out=b"\xee" * 512)
        c.pump()
        assert ctl.qos.scheduler.clients["vol"].depth == 1  # the second waits
        assert c.tmf(TmfFunction.ABORT_TASK, referenced_itt=queued) == \
            TmfResponse.FUNCTION_COMPLETE
        await wait_for(c, {first})
        await asyncio.sleep(0.1)  # past the aborted command's turn
        c.pump()
        read = c.command(rw16(0x88, 8, 1), expected_in=512)
        assert read.status == GOOD and bytes(read.data) == bytes(512)
        assert ctl.qos.scheduler.clients["vol"].depth == 0

    run(main())


def test_volume_without_qos_bypasses_the_scheduler(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy=policy_file(tmp_path, {"dscp": "af41"}))
        c = Client(ctl, INIT)
        c.command(TUR)
        for i in range(20):
            assert c.command(rw16(0x8A, i, 1), data_out=b"x" * 512).status == GOOD
        assert ctl.qos.scheduler.clients == {}
        assert c.conn._guards[0].qos is None

    run(main())


def test_policy_change_applies_to_the_next_command(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy=policy_file(tmp_path, {"limit_iops": 10}))
        c = Client(ctl, INIT)
        c.command(TUR)
        assert c.command(rw16(0x88, 0, 1), expected_in=512).status == GOOD
        vol = next(iter(ctl.volumes.values()))
        ctl.enforcement.register(vol.lu, replace(vol.meta, policy={"qos": {"limit_iops": 5000}},
                                                 extra={"policy_version": 2}))
        start = time.monotonic()
        itts = {c.core.submit_command(0, rw16(0x88, i, 1), expected_in_length=512)
                for i in range(20)}
        await wait_for(c, itts)
        assert time.monotonic() - start < 1.0  # at 10 IOPS this would take two seconds
        assert ctl.qos.scheduler.clients["vol"].info.limit_iops == 5000

    run(main())


def test_a_queue_held_at_an_old_limit_takes_a_change_without_a_new_command(tmp_path):
    """The initiator has nothing more to send (its commands all wait at 1 IOPS): a policy
    change still reaches the queue within the timer's refresh, both to new parameters and
    to no QoS at all."""
    async def main():
        for new_policy in ({"qos": {"limit_iops": 5000}}, {"qos": {"dscp": 46}}, None):
            ctl = make_controller(tmp_path / str(new_policy and len(str(new_policy))),
                                  policy=policy_file(tmp_path, {"limit_iops": 1}))
            c = Client(ctl, INIT)
            c.command(TUR)
            itts = {c.core.submit_command(0, rw16(0x88, i, 1), expected_in_length=512)
                    for i in range(5)}
            c.pump()
            assert ctl.qos.scheduler.clients["vol"].depth == 4
            vol = next(iter(ctl.volumes.values()))
            ctl.enforcement.register(vol.lu, replace(vol.meta, policy=new_policy,
                                                     extra={"policy_version": 2}))
            start = time.monotonic()
            done = await wait_for(c, itts, deadline=2.0)
            assert all(e.status == GOOD for e in done.values())
            assert time.monotonic() - start < 1.0, new_policy  # not 4 s at 1 IOPS
            await ctl.close()

    run(main())
