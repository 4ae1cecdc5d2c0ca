"""Sans-I/O SCSI block device (SBC-4 / SPC-4) over a block-store interface.

Public API::

    from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus, ScsiTarget

    lu = LogicalUnit(store=MemoryStore(1 << 30), identity=LuIdentity.from_uuid(vol_uuid))
    target = ScsiTarget({0: lu})
    result = target.execute(0, cdb, data_out, nexus)   # -> ScsiResult(status, data, sense)

Nothing here does I/O: the stores that do (``FileStore``, ``PiStore``) live in
:mod:`difs.storage`.  A logical unit over a :class:`PiBlockStore` (such as
``difs.storage.pistore.PiStore``) is formatted with T10 protection information
(``difs.scsi.protection``)::

    lu = LogicalUnit(store=PiStore.in_memory(1 << 30, pi_type=1), identity=...)
"""

from difs.scsi.device import LogicalUnit, LuIdentity
from difs.scsi.nexus import Nexus
from difs.scsi.result import ScsiResult
from difs.scsi.sense import ReservationConflict, ScsiError
from difs.scsi.store import BlockStore, MemoryStore, PiBlockStore
from difs.scsi.lun_map import ScsiTarget

__all__ = [
    "BlockStore",
    "LogicalUnit",
    "LuIdentity",
    "MemoryStore",
    "Nexus",
    "PiBlockStore",
    "ReservationConflict",
    "ScsiError",
    "ScsiResult",
    "ScsiTarget",
]
