"""The controller's QoS scheduler (difs.controller.qos) on virtual time: reservations met
under overload, limits never exceeded, weights shared in proportion, idle credit bounded,
costs by size, parameters changed mid-stream."""

from __future__ import annotations

import math

import pytest

from difs.controller.qos import RESERVATION, WEIGHT, Capacity, ClientInfo, QosScheduler
from difs.policy.services import QosService

KIB = 1024


class Sim:
    """Closed-loop clients on virtual time: each keeps ``depth`` requests queued (a
    dispatched request completes at once and is replaced), like an initiator at full blast."""

    def __init__(self, sched: QosScheduler) -> None:
        self.sched = sched
        self.now = 0.0
        self.load: dict[str, tuple[object, int, int]] = {}  # name -> (client, depth, nbytes)
        self.log: list[tuple[float, str]] = []

    def add(self, name: str, info: ClientInfo, *, depth: int = 32, nbytes: int = 4 * KIB,
            start: bool = True):
        client = self.sched.client(name, info)
        self.load[name] = (client, depth, nbytes)
        if start:
            self.start(name)
        return client

    def start(self, name: str) -> None:
        client, depth, nbytes = self.load[name]
        for _ in range(depth - client.depth):
            assert self.sched.submit(client, name, nbytes, self.now)

    def stop(self, name: str) -> None:
        client, _depth, nbytes = self.load[name]
        self.load[name] = (client, 0, nbytes)

    def run_until(self, end: float) -> None:
        sched = self.sched
        while self.now < end:
            out = sched.dispatch(self.now)
            for name in out:
                self.log.append((self.now, name))
                client, depth, nbytes = self.load[name]
                if client.depth < depth:
                    sched.submit(client, name, nbytes, self.now)
            if not out:
                wake = sched.wakeup
                if wake is None:
                    self.now = end
                    break
                assert wake > self.now, "woken for nothing"
                self.now = min(wake, end)

    def counts(self, start: float, end: float) -> dict[str, int]:
        out = dict.fromkeys(self.load, 0)
        for t, name in self.log:
            if start <= t < end:
                out[name] += 1
        return out


def windows(sim: Sim, name: str, start: int, end: int) -> list[int]:
    return [sim.counts(s, s + 1)[name] for s in range(start, end)]


def test_reservation_met_under_overload_even_with_a_small_weight():
    sim = Sim(QosScheduler(Capacity(iops=1000, bytes_per_second=1000 * 64 * KIB)))
    sim.add("a", ClientInfo(reservation_iops=300, weight=1))
    sim.add("b", ClientInfo(weight=100))
    sim.add("c", ClientInfo(weight=100))
    sim.run_until(10)
    for second in range(1, 10):
        got = sim.counts(second, second + 1)
        assert got["a"] >= 300 - 1, got  # a window may start just after a due tag
        assert sum(got.values()) <= 1000 * 1.02  # the capacity paces the weight phase
    # the rest is shared by weight: b and c alike
    got = sim.counts(1, 10)
    assert abs(got["b"] - got["c"]) <= 0.02 * got["b"]


def test_reservation_is_a_floor_and_weights_share_above_it():
    """Equal weights: a volume whose fair share (500) exceeds its reservation (400) is not
    held to the reservation; one whose share is below it (b: 1/11 of the rest) gets it."""
    sim = Sim(QosScheduler(Capacity(iops=1000, bytes_per_second=1000 * 64 * KIB)))
    sim.add("a", ClientInfo(reservation_iops=400, weight=1))
    sim.add("b", ClientInfo(weight=1))
    sim.run_until(5)
    got = sim.counts(1, 5)
    assert got["a"] / 4 >= 400 and got["b"] / 4 >= 400
    assert (got["a"] + got["b"]) / 4 == pytest.approx(1000 / (1 + 4 / 64), rel=0.02)
    sim = Sim(QosScheduler(Capacity(iops=1000, bytes_per_second=1000 * 64 * KIB)))
    b = sim.add("b", ClientInfo(reservation_iops=400, weight=1))
    sim.add("c", ClientInfo(weight=10))
    sim.run_until(5)
    got = sim.counts(1, 5)
    assert got["b"] >= 400 * 4 - 1
    assert b.dispatched[RESERVATION] > 0 and b.dispatched[WEIGHT] > 0


def test_weights_shared_in_proportion():
    sim = Sim(QosScheduler(Capacity(iops=2000, bytes_per_second=2000 * 64 * KIB)))
    sim.add("c", ClientInfo(weight=1))
    sim.add("d", ClientInfo(weight=3))
    sim.run_until(5)
    got = sim.counts(1, 5)
    assert got["d"] / got["c"] == pytest.approx(3, rel=0.02)
    # 4 KiB costs 1 + 4/64 units of a 64 KiB size unit: the capacity in 4 KiB I/Os
    assert got["c"] + got["d"] == pytest.approx(2000 / (1 + 4 / 64) * 4, rel=0.02)


@pytest.mark.parametrize("depth", [1, 64])
def test_limit_never_exceeded_in_any_window(depth):
    sim = Sim(QosScheduler(Capacity(iops=5000, bytes_per_second=1 << 33)))
    sim.add("b", ClientInfo(limit_iops=100, weight=1000), depth=depth)
    sim.add("x", ClientInfo(weight=1))
    sim.run_until(5)
    times = [t for t, name in sim.log if name == "b"]
    # any window of one second, wherever it starts, holds at most limit + 1 dispatches
    for i, t in enumerate(times):
        j = i
        while j < len(times) and times[j] < t + 1:
            j += 1
        assert j - i <= 101
    assert len(times) >= 100 * 5 - 1  # and the limit is reached (work-conserving below it)


def test_bytes_limit_and_bytes_reservation():
    capacity = Capacity(iops=10_000, bytes_per_second=100 << 20)
    sim = Sim(QosScheduler(capacity))
    sim.add("lim", ClientInfo(limit_bytes_per_second=4 << 20, weight=100), nbytes=64 * KIB)
    sim.add("res", ClientInfo(reservation_bytes_per_second=8 << 20), nbytes=64 * KIB)
    sim.add("noisy", ClientInfo(weight=1000), nbytes=1024 * KIB)
    sim.run_until(4)
    for second in range(1, 4):
        got = sim.counts(second, second + 1)
        assert got["lim"] * 64 * KIB <= (4 << 20) + 64 * KIB
        assert got["res"] * 64 * KIB >= (8 << 20) * 0.99


def test_cost_depends_on_size():
    """Equal weights, 4 KiB vs 1 MiB I/Os: equal cost shares, so the small ones get as
    many more I/Os as 1 MiB costs more than 4 KiB (cost = 1 + bytes / size_unit)."""
    capacity = Capacity(iops=10_000, bytes_per_second=100 * 1000 * 1000)  # 10 kB unit
    sim = Sim(QosScheduler(capacity))
    sim.add("small", ClientInfo(weight=1), nbytes=4 * KIB)
    sim.add("large", ClientInfo(weight=1), nbytes=1024 * KIB)
    sim.run_until(5)
    got = sim.counts(1, 5)
    unit = capacity.size_unit
    expected = (1 + 1024 * KIB / unit) / (1 + 4 * KIB / unit)
    assert got["small"] / got["large"] == pytest.approx(expected, rel=0.05)
    # and the device time they use together is the capacity
    used = sum(got[n] * (1 + b / unit) for n, b in (("small", 4 * KIB), ("large", 1024 * KIB)))
    assert used / 4 == pytest.approx(capacity.iops, rel=0.03)


def test_idle_volume_banks_at_most_its_burst():
    sched = QosScheduler(Capacity(iops=1000, bytes_per_second=1000 * 64 * KIB), burst=0.1)
    sim = Sim(sched)
    a = sim.add("a", ClientInfo(reservation_iops=100, limit_iops=500, weight=1), depth=1)
    sim.add("noisy", ClientInfo(weight=1))
    sim.run_until(1)
    sim.stop("a")
    sim.run_until(11)  # a idle for ten seconds
    before = list(a.dispatched)
    sim.load["a"] = (a, 1000, 4 * KIB)
    sim.start("a")
    sim.sched.dispatch(sim.now)  # the same instant: only the banked credit goes
    reserved = a.dispatched[RESERVATION] - before[RESERVATION]
    assert reserved <= math.ceil(0.1 * 100) + 1
    sim.run_until(13)
    # a second later it runs at its reservation plus its share, not 10 s of banked credit
    got = sim.counts(12, 13)
    assert got["a"] <= 500 + 1


def test_idle_limit_banks_nothing():
    sim = Sim(QosScheduler(None))
    sim.add("b", ClientInfo(limit_iops=50), depth=1)
    sim.run_until(1)
    sim.stop("b")
    sim.run_until(20)
    sim.load["b"] = (sim.load["b"][0], 500, 4 * KIB)
    sim.start("b")
    sim.run_until(21)
    assert sim.counts(20, 21)["b"] <= 51


def test_a_change_of_parameters_mid_stream():
    sim = Sim(QosScheduler(None))
    sim.add("b", ClientInfo(limit_iops=100))
    sim.run_until(3)
    sim.sched.client("b", ClientInfo(limit_iops=400))  # the queue stays, the rate changes
    sim.run_until(6)
    assert sim.counts(1, 3)["b"] == pytest.approx(200, abs=2)
    assert sim.counts(4, 6)["b"] == pytest.approx(800, abs=2)
    sim.sched.client("b", ClientInfo(limit_iops=10))
    sim.run_until(8)
    assert sim.counts(7, 8)["b"] <= 11


def test_queue_is_bounded():
    sched = QosScheduler(None, max_queue=4)
    client = sched.client("b", ClientInfo(limit_iops=1))
    assert all(sched.submit(client, i, 0, 0.0) for i in range(4))
    assert not sched.submit(client, 99, 0, 0.0)
    assert client.refused == 1 and client.depth == 4


def test_waits_and_phases_are_counted():
    sched = QosScheduler(None)
    client = sched.client("b", ClientInfo(limit_iops=10, reservation_iops=5))
    for i in range(3):
        sched.submit(client, i, 0, 0.0)
    assert sched.dispatch(0.0) == [0]
    assert sched.wakeup == pytest.approx(0.1)
    assert sched.dispatch(0.1) == [1]
    assert sched.dispatch(0.2) == [2]
    assert client.delayed == 2 and client.waited == pytest.approx(0.3)
    assert sum(client.dispatched) == 3
    assert sched.wakeup is None


def test_client_info_from_policy():
    assert ClientInfo.from_service(QosService(dscp=46)) is None
    assert ClientInfo.from_service(None) is None
    info = ClientInfo.from_service(QosService(reservation_iops=10, limit_bytes_per_second=5))
    assert info == ClientInfo(reservation_iops=10, limit_bytes_per_second=5, weight=1)
    assert ClientInfo.from_service({"weight": 3}) == ClientInfo(weight=3)


def test_many_volumes_each_get_their_reservation():
    """Reservations that add up to 90 % of the capacity are all met with 100 volumes."""
    sim = Sim(QosScheduler(Capacity(iops=10_000, bytes_per_second=1 << 32)))
    for i in range(100):
        sim.add(f"v{i}", ClientInfo(reservation_iops=90, weight=1 + i % 7), depth=4)
    sim.run_until(2)
    got = sim.counts(1, 2)
    assert min(got.values()) >= 90 - 1


def test_admit_is_the_fast_path_only_when_nothing_waits():
    sched = QosScheduler(None)
    lim = sched.client("lim", ClientInfo(limit_iops=10))
    other = sched.client("other", ClientInfo(weight=1))
    assert sched.admit(lim, 0, 0.0)  # idle: runs at once, counted, tags advanced
    assert not sched.admit(lim, 0, 0.01)  # its limit tag has not come
    assert sched.submit(lim, "x", 0, 0.01)
    assert not sched.admit(other, 0, 0.01)  # something is queued: no overtaking
    assert sched.submit(other, "y", 0, 0.01)
    assert sched.dispatch(0.01) == ["y"]
    assert sched.dispatch(0.1) == ["x"] and sched.queued == 0
    assert sum(lim.dispatched) == 2 and lim.delayed == 1


def test_a_held_up_controller_does_not_catch_up_past_limits_or_bursts():
    """The event loop was busy elsewhere for two seconds: the limited volume does not get
    two seconds of I/O at once, the reserved one at most its burst."""
    sched = QosScheduler(Capacity(iops=1000, bytes_per_second=1 << 30), burst=0.1)
    sim = Sim(sched)
    lim = sim.add("lim", ClientInfo(limit_iops=100, weight=1000), depth=500)
    res = sim.add("res", ClientInfo(reservation_iops=100, weight=1), depth=500)
    sim.add("noisy", ClientInfo(weight=1000), depth=500)
    sim.run_until(1)
    before = sum(lim.dispatched), res.dispatched[RESERVATION]
    sched.dispatch(3.0)  # nothing dispatched from 1 s to 3 s
    assert sum(lim.dispatched) - before[0] <= 2
    assert res.dispatched[RESERVATION] - before[1] <= 0.1 * 100 + 2  # the head, and the burst
