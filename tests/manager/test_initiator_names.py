"""Two hosts can never hold the same initiator name (a host binds only to its own name, and a
controller opens a volume to a name: a shared name would show one host's LUNs to the other).
The check is in code (``services/nodes.advertise``), not a database constraint; on PostgreSQL two
hosts racing to advertise the same new name are serialized on that name, so the second sees the
first and gets 409 — here raced on a real server, many times, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from mgr_support import ADMIN, host_adv
from test_concurrency import base_url  # noqa: F401  (the fixture: a real server in a thread)

ROUNDS = 12


def test_two_hosts_racing_for_one_initiator_name_never_both_get_it(base_url: str):  # noqa: F811
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=30) as admin:
        tokens = {}
        for r in range(ROUNDS):
            for side in "ab":
                name = f"h{r}{side}"
                tokens[name] = admin.post("/nodes", json={"name": name, "kind": "host"}).json()["token"]

    def advertise(name: str, iqn_host: str, barrier: threading.Barrier) -> int:
        body = host_adv(name=iqn_host)
        with httpx.Client(base_url=base_url, timeout=30) as c:
            barrier.wait()
            r = c.put(f"/nodes/{name}/advertisement", json=body, headers={"Authorization": f"Bearer {tokens[name]}"})
            assert r.status_code in (200, 409), r.text
            return r.status_code

    with ThreadPoolExecutor(2) as pool:
        for r in range(ROUNDS):
            barrier = threading.Barrier(2)
            codes = sorted(f.result() for f in [pool.submit(advertise, f"h{r}{s}", f"shared{r}", barrier) for s in "ab"])
            assert codes == [200, 409], f"round {r}: {codes}"
    with httpx.Client(base_url=base_url, headers=ADMIN) as admin:
        names = [n["iqn"] for n in admin.get("/nodes").json() if n.get("iqn")]
    assert len(names) == len(set(names)) == ROUNDS
