"""A SCSI block device (SBC-4 / SPC-4) over a :class:`~difs.scsi.store.BlockStore`, sans I/O.

:class:`LogicalUnit` takes a CDB, the data-out buffer (for write-type commands) and the
:class:`~difs.scsi.nexus.Nexus` it came through, and returns a
:class:`~difs.scsi.result.ScsiResult`.  It never raises: every fault becomes CHECK
CONDITION (or RESERVATION CONFLICT) with sense data naming it.

How a command is processed (:meth:`LogicalUnit.execute`):

1. look the operation code (and service action) up in the LU's command table
   (:mod:`difs.scsi.commands`); unknown → ILLEGAL REQUEST 20h/00h;
2. reject set bits the command does not define (reserved bits, NACA/LINK in CONTROL)
   with ILLEGAL REQUEST 24h/00h and a field pointer to the first offending bit;
3. report a pending unit attention for this nexus (except for INQUIRY, REPORT LUNS and
   REQUEST SENSE, per SAM-5);
4. apply reservations (SPC-2 RESERVE/RELEASE and persistent reservations);
5. run the handler, a plain function ``handler(lu, cdb, data_out, nexus)``; READ/WRITE
   handlers are the hot path (:mod:`difs.scsi.rw`, one path for plain and PI units).

Data-out shorter than the CDB's transfer length (iSCSI EDTL < SCSI transfer length): the
device writes the whole blocks it received and returns GOOD; a data-out that ends inside
a block is rejected with ILLEGAL REQUEST 0Eh/03h (INVALID FIELD IN COMMAND INFORMATION
UNIT).  Longer data-out is truncated to the transfer length.  This is what libiscsi's
iSCSIResiduals tests accept (and what Linux LIO does); the iSCSI layer reports the
residual from the result's ``transfer_length`` (the bytes of Data-Out the CDB asked for,
set on every result, failed commands included) against its EDTL.

A fault of the backing store ends at most the command it happened in: a full file system
(ENOSPC, EDQUOT, EFBIG) is DATA PROTECT 27h/07h SPACE ALLOCATION FAILED WRITE PROTECT, as a
thin-provisioned array answers; EIO is MEDIUM ERROR (11h/00h for a read, 0Ch/00h for a
command that writes); any other exception is HARDWARE ERROR 44h/00h
(:func:`difs.scsi.sense.store_error`).  ``on_store_fault(exc, error, cdb)`` is told, so the
adapter can log it.

Thread safety: ``execute`` is meant to be called from one thread per LU at a time, except
that read-modify-write commands (COMPARE AND WRITE, ORWRITE, EXTENDED COPY) take
``lu.rmw_lock`` so they stay atomic with respect to each other when an adapter runs
commands in a thread pool.
"""

from __future__ import annotations

import threading
import uuid as uuid_mod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from difs.integrity.errors import PiCheckError, PiError
from difs.sam.sense import (
    ASC_BUS_DEVICE_RESET_FUNCTION_OCCURRED,
    ASC_CAPACITY_DATA_HAS_CHANGED,
    ASC_I_T_NEXUS_LOSS_OCCURRED,
    ASC_LU_NOT_READY_INIT_REQUIRED,
    ASC_MODE_PARAMETERS_CHANGED,
    ASC_POWER_ON_OCCURRED,
    ASC_POWER_ON_RESET_OR_BDR,
    ASC_SCSI_BUS_RESET_OCCURRED,
    NOT_READY,
)
from difs.scsi import sense as S
from difs.scsi.commands import CommandSpec, build_command_table, data_out_length, supported
from difs.scsi.nexus import Nexus
from difs.scsi.protection import ProtectRules
from difs.scsi.reservations import Reservations
from difs.scsi.result import ScsiResult
from difs.scsi.sense import ScsiError

if TYPE_CHECKING:
    from difs.scsi.store import BlockStore

#: Locally administered IEEE company id used in NAA 6 designators (first octet has the
#: U/L bit set, so it cannot collide with a registered OUI).
DIFS_NAA_OUI = 0x0AD1F5


@dataclass(frozen=True)
class LuIdentity:
    """What INQUIRY reports about a logical unit; stable for the life of the volume."""

    serial: str
    uuid: uuid_mod.UUID
    vendor: str = "DIFS"
    product: str = "difs volume"
    revision: str = "0001"
    device_name: str = ""
    naa: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if not isinstance(self.uuid, uuid_mod.UUID):
            object.__setattr__(self, "uuid", uuid_mod.UUID(str(self.uuid)))
        if not self.naa:
            value = (6 << 124) | (DIFS_NAA_OUI << 100) | (self.uuid.int >> 28)
            object.__setattr__(self, "naa", value.to_bytes(16, "big"))
        if len(self.naa) != 16:
            raise ValueError("naa must be 16 bytes (NAA 6 IEEE registered extended)")

    @classmethod
    def from_uuid(cls, volume_uuid: uuid_mod.UUID | str, **kwargs: str) -> LuIdentity:
        u = volume_uuid if isinstance(volume_uuid, uuid_mod.UUID) else uuid_mod.UUID(str(volume_uuid))
        kwargs.setdefault("serial", u.hex[:32])
        return cls(uuid=u, **kwargs)  # type: ignore[arg-type]


PROVISIONING_TYPES = ("full", "resource", "thin")

# unit attention conditions, most important first (reported in this order)
_UA_PRIORITY = {
    ASC_POWER_ON_RESET_OR_BDR: 0,
    ASC_POWER_ON_OCCURRED: 0,
    ASC_SCSI_BUS_RESET_OCCURRED: 1,
    ASC_BUS_DEVICE_RESET_FUNCTION_OCCURRED: 1,
    ASC_I_T_NEXUS_LOSS_OCCURRED: 2,
}


class LogicalUnit:
    """One SCSI direct-access block device."""

    def __init__(
        self,
        *,
        store: BlockStore,
        identity: LuIdentity,
        block_size: int = 512,
        read_only: bool = False,
        write_cache: bool = True,
        thin: bool = False,
        provisioning: str | None = None,
        physical_block_size: int | None = None,
        max_transfer_bytes: int = 8 << 20,
        persistent_state: dict | None = None,
        on_persistent_change: Callable[[dict], None] | None = None,
        on_store_fault: Callable[[Exception, ScsiError, bytes], None] | None = None,
    ) -> None:
        if block_size < 512 or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two >= 512")
        self.store = store
        #: told (exception, the answer, CDB) when the store fails a command: the adapter
        #: logs it (this core does no logging)
        self.on_store_fault = on_store_fault
        self.identity = identity
        self.block_size = block_size
        self.block_shift = block_size.bit_length() - 1
        self.num_blocks = store.size >> self.block_shift
        self.read_only = read_only
        # logical block provisioning (SBC-4 4.7): "full" (no LBPME), "resource" (every
        # block has its space reserved; UNMAP zeroes it in place and leaves it anchored)
        # or "thin" (UNMAP deallocates)
        provisioning = provisioning or ("thin" if thin else "full")
        if provisioning not in PROVISIONING_TYPES:
            raise ValueError(f"provisioning must be one of {PROVISIONING_TYPES}")
        self.provisioning = provisioning
        self.thin = provisioning == "thin"
        self.lbpme = provisioning != "full"
        # Physical block = logical block unless told otherwise: the store's allocation
        # unit is reported as the optimal transfer/unmap granularity (VPD B0h) instead.
        # (A 4 KiB physical block would also be true of the file system, but libiscsi's
        # GetLBAStatus.UnmapSingle asks for status at LBA i+1 and expects the first
        # descriptor to start at i+LBPPB, which SBC-4 forbids unless LBPPB is 1.)
        pbs = max(physical_block_size or block_size, block_size)
        self.lbppbe = (pbs // block_size).bit_length() - 1
        self.granularity_blocks = max(1, max(store.granularity, pbs) >> self.block_shift)
        self.max_transfer_blocks = max(1, max_transfer_bytes >> self.block_shift)
        # WRITE ATOMIC(16): offered when the store can write all-or-nothing
        self.max_atomic_blocks = min(store.atomic_write_max >> self.block_shift,
                                     self.max_transfer_blocks, 0xFFFF)
        self.max_write_same_blocks = 0xFFFF
        self.max_unmap_blocks = 0x100000
        self.max_unmap_descriptors = 1024
        self.max_compare_write_blocks = 255
        # mode parameters (shared by all I_T nexuses)
        self.default_write_cache = write_cache
        self.write_cache = write_cache
        self.swp = False
        self.d_sense = False
        # state
        self.stopped = False
        self.prevent = 0
        self.rmw_lock = threading.Lock()
        self._write_protect = read_only
        self._known: set[Nexus] = set()
        self._lost: set[Nexus] = set()
        self._ua: dict[Nexus, list[tuple[int, int]]] = {}
        self.reservations = Reservations(self, persistent_state, on_persistent_change)
        # protection information (SBC-4 4.22): formatted with PI when the store keeps it;
        # the protect-field rules say what each RD/WR/VRPROTECT value does here
        self.pi_type = store.pi_type
        self.protect_rules = ProtectRules(self.pi_type)
        # READ and WRITE look their rule up per I/O: one attribute away
        self.read_rules = self.protect_rules.read
        self.write_rules = self.protect_rules.write
        self.target = None  # set by ScsiTarget.add_lun (for EXTENDED COPY, REPORT LUNS)
        self.copy_results: dict = {}
        self.xcopy_supported = True
        self._table: list[CommandSpec | None] = build_command_table(self)

    # --- the one entry point ----------------------------------------------------------

    def execute(self, cdb: bytes | memoryview, data_out: bytes | memoryview | None,
                nexus: Nexus) -> ScsiResult:
        """Run one command; never raises."""
        try:
            spec = self._table[cdb[0]]
            if spec is None:
                raise S.invalid_opcode()
            if spec.by_sa is not None:
                spec = spec.select(cdb)
            n = spec.cdb_len
            if len(cdb) < n:
                raise S.invalid_field_in_cdb(len(cdb))
            if int.from_bytes(cdb[:n], "big") & spec.reject_mask:
                raise spec.reserved_bit_error(cdb)
            if nexus not in self._known:
                self._first_contact(nexus)
            if self._ua and not spec.ua_exempt:
                self._report_unit_attention(nexus)
            if self.reservations.active:
                self.reservations.check(spec, nexus)
            if self.stopped and spec.medium:
                raise ScsiError(NOT_READY, *ASC_LU_NOT_READY_INIT_REQUIRED,
                                message="logical unit stopped")
            result = spec.handler(self, cdb, data_out, nexus)
            if spec.fill_transfer_length:
                result.transfer_length = data_out_length(self, cdb)
            return result
        except ScsiError as err:
            return self._failed(err, cdb)
        except PiError as err:
            # a PI check failed (ABORTED COMMAND 10h/01h-03h, INFORMATION = LBA)
            return self._failed(pi_error(err), cdb)
        except IndexError:
            return self._failed(S.invalid_opcode(), cdb)
        except Exception as exc:  # the store failed (or a bug): this command only
            return self._store_fault(exc, cdb)

    def _store_fault(self, exc: Exception, cdb) -> ScsiResult:
        """The answer to a command the store failed under (:func:`sense.store_error`:
        full disk, I/O error, anything else), reported to ``on_store_fault``."""
        err = S.store_error(exc, write=self._writes(cdb))
        if self.on_store_fault is not None:
            self.on_store_fault(exc, err, cdb)
        return self._failed(err, cdb)

    def _writes(self, cdb) -> bool:
        """Whether ``cdb`` is a command that writes (reservation class W)."""
        spec = self._table[cdb[0]] if len(cdb) else None
        if spec is not None and spec.by_sa is not None and len(cdb) > 1:
            spec = spec.by_sa.get(cdb[1] & 0x1F)
        return spec is not None and spec.res == "W"

    def _failed(self, err: ScsiError, cdb) -> ScsiResult:
        """The answer to a command that failed; it still carries the transfer length."""
        length = data_out_length(self, cdb) if len(cdb) else 0
        return ScsiResult.from_error(err, descriptor=self.d_sense, transfer_length=length)

    def supported_commands(self) -> list[CommandSpec]:
        """Every supported command (service actions expanded), sorted."""
        return supported(self._table)

    def command_group(self, opcode: int) -> CommandSpec | None:
        """The table entry for ``opcode`` (a service-action group or a command)."""
        return self._table[opcode & 0xFF]

    # --- unit attentions --------------------------------------------------------------

    def _first_contact(self, nexus: Nexus) -> None:
        self._known.add(nexus)
        if nexus in self._lost:
            self._lost.discard(nexus)
            self.establish_unit_attention(ASC_I_T_NEXUS_LOSS_OCCURRED, nexus=nexus)
        else:
            self.establish_unit_attention(ASC_POWER_ON_RESET_OR_BDR, nexus=nexus)

    def _report_unit_attention(self, nexus: Nexus) -> None:
        pending = self._ua.get(nexus)
        if pending:
            asc, ascq = pending.pop(0)
            if not pending:
                del self._ua[nexus]
            raise S.unit_attention(asc, ascq)

    def pop_unit_attention(self, nexus: Nexus) -> tuple[int, int] | None:
        """Take the next pending unit attention for ``nexus`` (REQUEST SENSE uses this)."""
        if nexus not in self._known:
            self._first_contact(nexus)
        pending = self._ua.get(nexus)
        if not pending:
            return None
        code = pending.pop(0)
        if not pending:
            del self._ua[nexus]
        return code

    def establish_unit_attention(self, code: tuple[int, int], *, nexus: Nexus | None = None,
                                 exclude: Nexus | None = None) -> None:
        """Queue a unit attention for ``nexus``, or for every known nexus but ``exclude``."""
        targets = [nexus] if nexus is not None else [n for n in self._known if n != exclude]
        prio = _UA_PRIORITY.get(code, 9)
        for nx in targets:
            pending = self._ua.setdefault(nx, [])
            if code in pending:
                continue
            if prio < 9:
                # a reset supersedes everything queued before it
                pending[:] = [c for c in pending if _UA_PRIORITY.get(c, 9) < prio]
            pending.append(code)
            pending.sort(key=lambda c: _UA_PRIORITY.get(c, 9))

    def pending_unit_attentions(self, nexus: Nexus) -> list[tuple[int, int]]:
        return list(self._ua.get(nexus, ()))

    # --- events from the transport / task management ----------------------------------

    def reset(self, *, nexus: Nexus | None = None,
              code: tuple[int, int] = ASC_BUS_DEVICE_RESET_FUNCTION_OCCURRED) -> None:
        """LOGICAL UNIT RESET: clear SPC-2 reservations and PREVENT state, and establish a
        unit attention (29h/03h by default) for every I_T nexus.  Persistent reservations
        survive.  ``nexus`` is the nexus that asked (it gets the UA too, per SAM-5)."""
        self.reservations.reset()
        self.prevent = 0
        self.stopped = False
        for nx in list(self._known):
            self.establish_unit_attention(code, nexus=nx)

    def power_on(self) -> None:
        """Cold reset: forget every nexus; each gets 29h/00h again at first contact."""
        self.reservations.reset()
        self.prevent = 0
        self.stopped = False
        self._ua.clear()
        self._known.clear()
        self._lost.clear()

    def nexus_lost(self, nexus: Nexus) -> None:
        """The I_T nexus ended (logout or connection drop without reinstatement).

        Releases an SPC-2 reservation it held, drops its PREVENT state and queued unit
        attentions; a later session from the same initiator port sees 29h/07h."""
        self.reservations.nexus_lost(nexus)
        if self.prevent:
            self.prevent = 0
        self._ua.pop(nexus, None)
        if nexus in self._known:
            self._known.discard(nexus)
            self._lost.add(nexus)

    def capacity_changed(self) -> None:
        """Re-read the store size (after a resize) and tell every nexus (2Ah/09h)."""
        self.num_blocks = self.store.size >> self.block_shift
        self.establish_unit_attention(ASC_CAPACITY_DATA_HAS_CHANGED)

    # --- helpers for handlers ---------------------------------------------------------

    @property
    def app_tag_checked(self) -> bool:
        """APP_CHK: the application tag is checked (the volume has an expected tag)."""
        return bool(self.pi_type) and getattr(self.store, "app_tag", None) is not None

    @property
    def write_protected(self) -> bool:
        return self.read_only or self.swp

    def check_writable(self) -> None:
        if self.read_only:
            raise S.write_protected()
        if self.swp:
            raise S.write_protected(software=True)

    def deallocate(self, offset: int, length: int) -> None:
        """Unmap a byte range: thin LUs give the space back, resource-provisioned LUs
        keep it reserved (zeroed in place, anchored); both read back zeros (LBPRZ)."""
        if self.thin:
            self.store.discard(offset, length)
        else:
            self.store.write_zeroes(offset, length)

    def check_range(self, lba: int, n: int) -> None:
        if lba >= self.num_blocks or lba + n > self.num_blocks:
            raise S.lba_out_of_range(lba)

    def sense_for(self, err: ScsiError) -> bytes:
        return err.sense(descriptor=self.d_sense)

    def set_mode(self, *, write_cache: bool | None = None, swp: bool | None = None,
                 d_sense: bool | None = None, by: Nexus | None = None) -> bool:
        """Change mode parameters; returns True if anything changed (and queues 2Ah/01h
        for the other nexuses)."""
        changed = False
        if write_cache is not None and write_cache != self.write_cache:
            if not write_cache:
                self.store.flush()
            self.write_cache = write_cache
            changed = True
        if swp is not None and swp != self.swp:
            self.swp = swp
            changed = True
        if d_sense is not None and d_sense != self.d_sense:
            self.d_sense = d_sense
            changed = True
        self._write_protect = self.read_only or self.swp
        if changed:
            self.establish_unit_attention(ASC_MODE_PARAMETERS_CHANGED, exclude=by)
        return changed

    def __repr__(self) -> str:
        return (f"LogicalUnit(serial={self.identity.serial!r}, blocks={self.num_blocks}, "
                f"block_size={self.block_size})")


def pi_error(err: PiError) -> ScsiError:
    """The CHECK CONDITION for an error of the PI library (wire codes carried over)."""
    if isinstance(err, PiCheckError):
        return ScsiError(err.sense_key, err.asc, err.ascq, information=err.lba,
                         message=str(err))
    return ScsiError(err.sense_key, err.asc, err.ascq, field_byte=1, field_bit=7,
                     message=str(err))
