"""Path selection: only satisfying, available paths; balancing; the plugin registry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from difs.host.paths import ChannelSpec, Path, PathState, isid_for_channel
from difs.host.selection import (
    LeastOutstanding,
    PathSelector,
    RoundRobin,
    choose,
    path_selector,
    path_selectors,
    register_path_selector,
)
from difs.policy.fast import DATA_DIGEST, HEADER_DIGEST, NegotiatedServices, Requirement

DIGESTS = Requirement(flags=HEADER_DIGEST | DATA_DIGEST)
NOTHING = Requirement()


def make_path(channel: int, *, digests: bool, state: PathState = PathState.UP) -> Path:
    path = Path(ChannelSpec(channel, header_digest=digests, data_digest=digests),
                controller="ctl", portal="127.0.0.1:3260", target="iqn.x:y")
    path.negotiated = NegotiatedServices(header_digest=digests, data_digest=digests)
    path.state = state
    return path


@pytest.mark.parametrize("name", ["least-outstanding", "round-robin"])
def test_only_satisfying_paths_are_chosen(name: str) -> None:
    plain, digest = make_path(1, digests=False), make_path(0, digests=True)
    selector = path_selector(name)
    for _ in range(10):
        assert choose(selector, requirement=DIGESTS, paths=[plain, digest]) is digest
    chosen = {choose(selector, requirement=NOTHING, paths=[plain, digest]).channel for _ in range(10)}
    # round-robin spreads over everything that satisfies; least-outstanding does not
    # make an application that needs nothing pay for digests
    assert chosen == ({0, 1} if name == "round-robin" else {1})
    plain.state = PathState.DOWN
    assert choose(selector, requirement=NOTHING, paths=[plain, digest]) is digest


@pytest.mark.parametrize("name", ["least-outstanding", "round-robin"])
def test_no_satisfying_available_path_means_none_not_a_downgrade(name: str) -> None:
    plain = make_path(1, digests=False)
    down = make_path(0, digests=True, state=PathState.DOWN)
    assert choose(path_selector(name), requirement=DIGESTS, paths=[plain, down]) is None
    unnegotiated = Path(ChannelSpec(2), controller="c", portal="p", target="t")
    unnegotiated.state = PathState.UP
    assert not unnegotiated.satisfies(NOTHING)


def test_least_outstanding_prefers_the_idle_path() -> None:
    a, b = make_path(0, digests=True), make_path(2, digests=True)
    a.outstanding = 5
    assert {LeastOutstanding().select(requirement=DIGESTS, paths=[a, b]) for _ in range(4)} == {b}
    a.outstanding = b.outstanding = 3
    assert {LeastOutstanding().select(requirement=DIGESTS, paths=[a, b]).channel
            for _ in range(2)} <= {0, 2}


def test_round_robin_alternates() -> None:
    a, b = make_path(0, digests=True), make_path(2, digests=True)
    rr = RoundRobin()
    picks = [rr.select(requirement=DIGESTS, paths=[a, b]).channel for _ in range(4)]
    assert picks == [0, 2, 0, 2]


def test_a_misbehaving_plugin_is_caught() -> None:
    class Reckless(PathSelector):
        name = "reckless"

        def select(self, *, requirement, paths):
            return paths[0]

    with pytest.raises(AssertionError, match="does not satisfy"):
        choose(Reckless(), requirement=DIGESTS, paths=[make_path(1, digests=False)])


def test_registry() -> None:
    assert {"least-outstanding", "round-robin"} <= set(path_selectors())
    with pytest.raises(ValueError, match="already registered"):
        register_path_selector("round-robin", RoundRobin)
    with pytest.raises(ValueError, match="unknown path selector 'fastest'"):
        path_selector("fastest")


def test_isid_carries_the_channel() -> None:
    assert isid_for_channel(0) != isid_for_channel(1)
    assert isid_for_channel(7) & 0xFFFF == 7
    with pytest.raises(ValueError):
        isid_for_channel(1 << 16)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(list(PathState)), st.integers(0, 9)),
                max_size=6), st.booleans(), st.sampled_from(["least-outstanding", "round-robin"]))
def test_selection_never_breaks_the_contract(specs, need_digests, name) -> None:
    paths = []
    for i, (digests, state, outstanding) in enumerate(specs):
        p = make_path(i, digests=digests, state=state)
        p.outstanding = outstanding
        paths.append(p)
    req = DIGESTS if need_digests else NOTHING
    got = choose(path_selector(name), requirement=req, paths=paths)
    ok = [p for p in paths if p.state is PathState.UP and (p.spec.header_digest or not need_digests)]
    assert (got is None) == (not ok)
    if got is not None:
        assert got in ok


@pytest.mark.parametrize("name", ["least-outstanding", "round-robin"])
def test_a_degraded_path_is_avoided_while_another_satisfies_never_for_a_weaker_one(name) -> None:
    """Issue 17 finding 5: a path that keeps corrupting data is degraded; I/O goes to another
    path that satisfies the policy — and stays on the degraded one rather than take a path
    that does not."""
    a, b, plain = make_path(0, digests=True), make_path(2, digests=True), make_path(1, digests=False)
    a.degraded = True
    a.outstanding, b.outstanding = 0, 7  # the degraded one is idle, and still not chosen
    selector = path_selector(name)
    assert {choose(selector, requirement=DIGESTS, paths=[a, b, plain]) for _ in range(6)} == {b}
    b.state = PathState.DOWN
    assert {choose(selector, requirement=DIGESTS, paths=[a, b, plain]) for _ in range(6)} == {a}
    a.degraded = False
    b.state = PathState.UP
    assert a in {choose(selector, requirement=DIGESTS, paths=[a, b, plain]) for _ in range(6)}
