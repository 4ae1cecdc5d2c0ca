import uuid

import pytest

from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus, ScsiTarget

VOLUME_UUID = uuid.UUID("12345678-9abc-4def-8123-456789abcdef")
BLOCKS = 4096


class Fx:
    """A logical unit with two nexuses whose power-on unit attentions are consumed."""

    def __init__(self, **kwargs):
        self.store = MemoryStore(kwargs.pop("size", BLOCKS * 512))
        self.lu = LogicalUnit(store=self.store, identity=LuIdentity.from_uuid(VOLUME_UUID),
                              **kwargs)
        self.target = ScsiTarget({0: self.lu})
        self.n1 = Nexus("iqn.2024-01.test:init1,i,0x23d000000001", "iqn.2024-01.test:tgt,t,0x1", 1)
        self.n2 = Nexus("iqn.2024-01.test:init2,i,0x23d000000002", "iqn.2024-01.test:tgt,t,0x1", 2)
        for nx in (self.n1, self.n2):
            self.lu.execute(bytes(6), None, nx)  # consume 29h/00h

    def run(self, cdb, data=None, nexus=None):
        return self.lu.execute(cdb, data, nexus or self.n1)


@pytest.fixture
def fx():
    return Fx()


@pytest.fixture
def make_fx():
    return Fx
