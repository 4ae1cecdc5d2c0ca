"""Property: any CDB, any data-out, any nexus -> a result, never an exception."""

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difs.sam.sense import parse_sense
from difs.sam.status import CHECK_CONDITION, GOOD, RESERVATION_CONFLICT
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus, ScsiTarget
from difs.scsi.commands import data_out_length

KNOWN_OPCODES = [0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x1E, 0x25, 0x28,
                 0x2A, 0x2E, 0x2F, 0x34, 0x35, 0x37, 0x41, 0x42, 0x48, 0x55, 0x56, 0x57, 0x5A,
                 0x5E, 0x5F, 0x83, 0x84, 0x88, 0x89, 0x8A, 0x8B, 0x8E, 0x8F, 0x90, 0x91, 0x93,
                 0x9E, 0xA0, 0xA3, 0xA8, 0xAA, 0xAE, 0xAF, 0xB7]


def make_target(thin: bool) -> ScsiTarget:
    lu = LogicalUnit(store=MemoryStore(64 * 512), identity=LuIdentity.from_uuid(uuid.uuid4()),
                     thin=thin, max_transfer_bytes=32 * 512)
    return ScsiTarget({0: lu})


TARGETS = {True: make_target(True), False: make_target(False)}
NEXUSES = [Nexus(f"iqn.f:{i},i,0x{i}", "iqn.t,t,0x1", i) for i in range(3)]

cdbs = st.one_of(
    st.binary(min_size=0, max_size=20),
    st.tuples(st.sampled_from(KNOWN_OPCODES), st.binary(min_size=15, max_size=15))
      .map(lambda t: bytes((t[0],)) + t[1]),
    # mostly-zero CDBs reach deeper into the handlers
    st.tuples(st.sampled_from(KNOWN_OPCODES), st.lists(st.sampled_from([0, 0, 0, 1, 2, 0x10, 0xFF]),
                                                       min_size=15, max_size=15))
      .map(lambda t: bytes((t[0],)) + bytes(t[1])),
)
data_outs = st.one_of(st.none(), st.binary(max_size=2048),
                      st.integers(0, 8).map(lambda n: bytes(n * 512)))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cdb=cdbs, data=data_outs, nexus=st.sampled_from(NEXUSES), lun=st.sampled_from([0, 0, 0, 1]),
       thin=st.booleans())
def test_random_cdbs_never_raise(cdb, data, nexus, lun, thin):
    target = TARGETS[thin]
    result = target.execute(lun, cdb, data, nexus)
    assert result.status in (GOOD, CHECK_CONDITION, RESERVATION_CONFLICT)
    if result.status == CHECK_CONDITION:
        key, asc, ascq = parse_sense(result.sense)
        assert key in (0x2, 0x3, 0x5, 0x6, 0x7, 0xA, 0xE)
    else:
        assert result.sense == b""
    lu = target.luns.get(lun)
    if len(cdb) and lu is not None:
        assert result.transfer_length >= 0
        # the handlers' own lengths agree with the CDB layout table's data-out rule
        assert result.transfer_length == data_out_length(lu, cdb)
    else:
        assert result.transfer_length == 0
