"""PERSISTENT RESERVE IN / OUT: registration, every reservation type, access rules,
CLEAR, PREEMPT, unit attentions, APTPL state persistence."""

import struct
import uuid

import pytest
from scsi_cdbs import assert_check, assert_good, read10, write10

from difs.sam.sense import ILLEGAL_REQUEST, UNIT_ATTENTION
from difs.sam.status import RESERVATION_CONFLICT
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus

BS = 512
WE, EA, WERO, EARO, WEAR, EAAR = 1, 3, 5, 6, 7, 8


def prout(sa, key=0, sark=0, pr_type=0, scope=0, flags=0, length=24):
    cdb = struct.pack(">BBBBBIB", 0x5F, sa, (scope << 4) | pr_type, 0, 0, length, 0)
    return cdb, struct.pack(">QQ4xB3x", key, sark, flags)


def prin(sa, alloc=8192):
    return struct.pack(">BBBBBBBHB", 0x5E, sa, 0, 0, 0, 0, 0, alloc, 0)


def do(fx, nexus, sa, **kw):
    cdb, params = prout(sa, **kw)
    return fx.run(cdb, params, nexus=nexus)


def keys(fx, nexus=None):
    d = bytes(assert_good(fx.run(prin(0), nexus=nexus)).data)
    gen, n = struct.unpack_from(">II", d)
    return gen, [struct.unpack_from(">Q", d, 8 + 8 * i)[0] for i in range(n // 8)]


def reservation(fx):
    d = bytes(assert_good(fx.run(prin(1))).data)
    if struct.unpack_from(">I", d, 4)[0] == 0:
        return None
    return struct.unpack_from(">Q", d, 8)[0], d[21] & 0x0F


def test_register_reregister_unregister(fx):
    gen0, k = keys(fx)
    assert k == []
    assert_good(do(fx, fx.n1, 6, sark=0xAAA))                       # register and ignore
    gen1, k = keys(fx)
    assert k == [0xAAA] and gen1 == gen0 + 1
    assert do(fx, fx.n1, 0, key=0, sark=0xBBB).status == RESERVATION_CONFLICT
    assert_good(do(fx, fx.n1, 0, key=0xAAA, sark=0xBBB))            # change key
    assert keys(fx)[1] == [0xBBB]
    assert_good(do(fx, fx.n1, 0, key=0xBBB, sark=0))                # unregister
    assert keys(fx)[1] == []
    assert do(fx, fx.n2, 0, key=5, sark=6).status == RESERVATION_CONFLICT  # not registered


def test_read_keys_truncated_keeps_additional_length(fx):
    assert_good(do(fx, fx.n1, 6, sark=0x1234))
    d = bytes(assert_good(fx.run(prin(0, alloc=8))).data)
    assert len(d) == 8 and struct.unpack_from(">I", d, 4)[0] == 8


@pytest.mark.parametrize("pr_type", [WE, EA, WERO, EARO, WEAR, EAAR])
def test_reserve_read_reservation_release(fx, pr_type):
    assert_good(do(fx, fx.n1, 6, sark=0x77))
    assert reservation(fx) is None
    gen = keys(fx)[0]
    assert_good(do(fx, fx.n1, 1, key=0x77, pr_type=pr_type))
    assert_good(do(fx, fx.n1, 1, key=0x77, pr_type=pr_type))       # same again is fine
    expected_key = 0 if pr_type in (WEAR, EAAR) else 0x77
    assert reservation(fx) == (expected_key, pr_type)
    assert keys(fx)[0] == gen                                       # RESERVE keeps generation
    assert_good(do(fx, fx.n1, 2, key=0x77, pr_type=pr_type))
    assert reservation(fx) is None


# (registered i2 can read, can write, unregistered i2 can read, can write) - libiscsi table
ACCESS = {WE: (1, 0, 1, 0), EA: (0, 0, 0, 0), EARO: (1, 1, 0, 0), WERO: (1, 1, 1, 0),
          EAAR: (1, 1, 0, 0), WEAR: (1, 1, 1, 0)}


@pytest.mark.parametrize("pr_type", sorted(ACCESS))
def test_access_rules_per_type(fx, pr_type):
    reg_r, reg_w, unreg_r, unreg_w = ACCESS[pr_type]
    assert_good(do(fx, fx.n1, 6, sark=1))
    assert_good(do(fx, fx.n2, 6, sark=2))
    assert_good(do(fx, fx.n1, 1, key=1, pr_type=pr_type))
    assert_good(fx.run(read10(1, 1), nexus=fx.n1))
    assert_good(fx.run(write10(1, 1), bytes(BS), nexus=fx.n1))

    def ok(r):
        return r.status == 0

    assert ok(fx.run(read10(1, 1), nexus=fx.n2)) == bool(reg_r)
    assert ok(fx.run(write10(1, 1), bytes(BS), nexus=fx.n2)) == bool(reg_w)
    assert_good(do(fx, fx.n2, 0, key=2, sark=0))
    assert ok(fx.run(read10(1, 1), nexus=fx.n2)) == bool(unreg_r)
    assert ok(fx.run(write10(1, 1), bytes(BS), nexus=fx.n2)) == bool(unreg_w)
    assert not ok(fx.run(write10(1, 1), bytes(BS), nexus=fx.n2)) or unreg_w
    assert_good(fx.run(bytes(6), nexus=fx.n2))                     # TUR always allowed
    assert_good(fx.run(bytes((0x12, 0, 0, 0, 36, 0)), nexus=fx.n2))
    assert_good(do(fx, fx.n1, 2, key=1, pr_type=pr_type))


@pytest.mark.parametrize("pr_type,shared", [(WE, False), (EA, False), (WERO, False),
                                            (EARO, False), (WEAR, True), (EAAR, True)])
def test_unregistering_holder(fx, pr_type, shared):
    assert_good(do(fx, fx.n1, 6, sark=1))
    assert_good(do(fx, fx.n2, 6, sark=2))
    assert_good(do(fx, fx.n1, 1, key=1, pr_type=pr_type))
    assert_good(do(fx, fx.n1, 0, key=1, sark=0))
    if shared:
        assert reservation(fx) == (0, pr_type)
        assert_good(do(fx, fx.n2, 2, key=2, pr_type=pr_type))
    else:
        assert reservation(fx) is None
    assert reservation(fx) is None


def test_reserve_conflicts(fx):
    assert_good(do(fx, fx.n1, 6, sark=1))
    assert_good(do(fx, fx.n2, 6, sark=2))
    assert do(fx, fx.n1, 1, key=9, pr_type=WE).status == RESERVATION_CONFLICT   # wrong key
    assert_good(do(fx, fx.n1, 1, key=1, pr_type=WE))
    assert do(fx, fx.n2, 1, key=2, pr_type=WE).status == RESERVATION_CONFLICT
    assert do(fx, fx.n1, 1, key=1, pr_type=EA).status == RESERVATION_CONFLICT   # other type
    assert_good(do(fx, fx.n2, 2, key=2, pr_type=WE))   # release by non-holder: no-op
    assert reservation(fx) == (1, WE)
    assert_check(do(fx, fx.n1, 2, key=1, pr_type=EA), ILLEGAL_REQUEST, 0x26, 0x04)
    assert_check(do(fx, fx.n1, 1, key=1, pr_type=2), ILLEGAL_REQUEST, 0x24)
    assert_check(do(fx, fx.n1, 1, key=1, pr_type=WE, scope=1), ILLEGAL_REQUEST, 0x24)


def test_clear_removes_everything_and_bumps_generation_once(fx):
    assert_good(do(fx, fx.n1, 6, sark=1))
    assert_good(do(fx, fx.n2, 6, sark=2))
    gen = keys(fx)[0]
    assert_good(do(fx, fx.n1, 1, key=1, pr_type=EA))
    assert_good(do(fx, fx.n1, 3, key=1))
    assert reservation(fx) is None
    g, k = keys(fx)
    assert k == [] and g == gen + 1
    assert_check(fx.run(bytes(6), nexus=fx.n2), UNIT_ATTENTION, 0x2A, 0x03)


def test_preempt_removes_registration_without_reservation(fx):
    assert_good(do(fx, fx.n1, 6, sark=0x11))
    assert_good(do(fx, fx.n2, 6, sark=0x22))
    gen = keys(fx)[0]
    assert_good(do(fx, fx.n2, 4, key=0x22, sark=0x11, pr_type=EA))
    assert_check(fx.run(bytes(6), nexus=fx.n1), UNIT_ATTENTION, 0x2A, 0x05)
    g, k = keys(fx)
    assert k == [0x22] and g == gen + 1
    assert do(fx, fx.n2, 4, key=0x22, sark=0x99, pr_type=EA).status == RESERVATION_CONFLICT
    assert_check(do(fx, fx.n2, 4, key=0x22, sark=0, pr_type=EA), ILLEGAL_REQUEST, 0x26)


def test_preempt_takes_over_reservation(fx):
    assert_good(do(fx, fx.n1, 6, sark=0x11))
    assert_good(do(fx, fx.n2, 6, sark=0x22))
    assert_good(do(fx, fx.n1, 1, key=0x11, pr_type=WE))
    assert_good(do(fx, fx.n2, 5, key=0x22, sark=0x11, pr_type=EA))   # PREEMPT AND ABORT
    assert_check(fx.run(bytes(6), nexus=fx.n1), UNIT_ATTENTION, 0x2A, 0x05)
    assert reservation(fx) == (0x22, EA)
    assert keys(fx)[1] == [0x22]
    assert fx.run(read10(0, 1), nexus=fx.n1).status == RESERVATION_CONFLICT


def test_preempt_all_registrants_with_zero_key(fx):
    assert_good(do(fx, fx.n1, 6, sark=0x11))
    assert_good(do(fx, fx.n2, 6, sark=0x22))
    assert_good(do(fx, fx.n1, 1, key=0x11, pr_type=WEAR))
    assert_good(do(fx, fx.n2, 4, key=0x22, sark=0, pr_type=WE))
    assert_check(fx.run(bytes(6), nexus=fx.n1), UNIT_ATTENTION, 0x2A, 0x05)
    assert reservation(fx) == (0x22, WE)
    assert keys(fx)[1] == [0x22]


def test_report_capabilities_and_full_status(fx):
    d = bytes(assert_good(fx.run(prin(2))).data)
    assert struct.unpack_from(">H", d)[0] == 8
    assert (d[3] >> 4) & 7 <= 5
    mask = struct.unpack_from(">H", d, 4)[0]
    assert mask == 0xEA01
    assert_good(do(fx, fx.n1, 6, sark=0x55))
    assert_good(do(fx, fx.n1, 1, key=0x55, pr_type=WE))
    d = bytes(assert_good(fx.run(prin(3))).data)
    key, = struct.unpack_from(">Q", d, 8)
    assert key == 0x55 and d[8 + 12] & 0x01 and d[8 + 13] == WE
    tid_len = struct.unpack_from(">I", d, 8 + 20)[0]
    tid = d[8 + 24:8 + 24 + tid_len]
    assert tid[0] & 0x0F == 5 and b"iqn.2024-01.test:init1" in tid


def test_invalid_service_actions_and_parameter_lengths(fx):
    for sa in range(4, 0x20):
        assert fx.run(prin(sa)).status == 2
    cdb, params = prout(7, key=1)
    assert_check(fx.run(cdb, params), ILLEGAL_REQUEST, 0x24)
    cdb, params = prout(6, sark=1, length=20)
    assert_check(fx.run(cdb, params[:20]), ILLEGAL_REQUEST, 0x1A)
    assert_check(do(fx, fx.n1, 6, sark=1, flags=0x08), ILLEGAL_REQUEST, 0x26)   # SPEC_I_PT
    assert_check(do(fx, fx.n1, 6, sark=1, flags=0x04), ILLEGAL_REQUEST, 0x26)   # ALL_TG_PT


def test_spc2_reserve_conflicts_with_registrations(fx):
    assert_good(do(fx, fx.n1, 6, sark=1))
    assert fx.run(bytes((0x16, 0, 0, 0, 0, 0))).status == RESERVATION_CONFLICT
    assert_good(do(fx, fx.n1, 0, key=1, sark=0))
    assert_good(fx.run(bytes((0x16, 0, 0, 0, 0, 0))))
    assert do(fx, fx.n2, 6, sark=2).status == RESERVATION_CONFLICT   # SPC-2 held by n1


def test_state_hook_and_restore_survive_reset(make_fx):
    saved = []
    f = make_fx()
    f.lu.reservations.on_change = saved.append
    assert_good(do(f, f.n1, 6, sark=0xABC, flags=0x01))          # APTPL
    assert_good(do(f, f.n1, 1, key=0xABC, pr_type=EA))
    f.lu.reset()
    assert_check(f.run(bytes(6)), UNIT_ATTENTION, 0x29, 0x03)
    assert reservation(f) == (0xABC, EA)                        # survives LUN reset
    state = saved[-1]
    assert state["aptpl"] is True and state["reservation"]["type"] == EA
    import json
    state = json.loads(json.dumps(state))
    lu2 = LogicalUnit(store=MemoryStore(1 << 20), identity=LuIdentity.from_uuid(uuid.uuid4()),
                      persistent_state=state)
    other = Nexus("iqn.other,i,0x9", "iqn.2024-01.test:tgt,t,0x1")
    lu2.execute(bytes(6), None, other)
    assert lu2.execute(read10(0, 1), None, other).status == RESERVATION_CONFLICT
    same = Nexus(f.n1.initiator_port, f.n1.target_port)
    lu2.execute(bytes(6), None, same)
    assert_good(lu2.execute(read10(0, 1), None, same))
