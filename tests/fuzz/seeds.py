"""Builds the seed corpus of every target (``python -m fuzz seeds``), into corpus/<target>/.

iSCSI: the golden vectors of tests/unit/vectors/iscsi, and the two directions of real logins
between difs' own initiator and target cores (no CHAP, CHAP, mutual CHAP, discovery, digests
offered), recorded with the knobs the targets replay them with. NBD: hand-built client
streams (every option, every command). Policies and schemas: the built-in tiers and one valid
body per schema. A finding's crashing input is kept beside the seeds as ``crash-<what>``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from difs.iscsi.constants import BHS_LENGTH
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.session import SessionTable
from difs.iscsi.target_connection import TargetConnection
from difs.nbd import constants as c
from difs.nbd import wire
from difs.policy.tiers import DEFAULT_TIERS

from fuzz import CORPUS, iscsi_initiator_login, iscsi_target_login
from fuzz.nbd_transmission import handshake, option

VECTORS = Path(__file__).resolve().parents[1] / "unit" / "vectors" / "iscsi"
WHOLE = 0  # chunk-size knob of the iSCSI login targets: one PDU at a time
CHUNK = 255  # chunk-size knob of the framer and NBD targets: 256-byte receive chunks


def write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def iscsi_framer() -> None:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    for name, meta in sorted(manifest.items()):
        flags = int(meta["header_digest"]) | 2 * int(meta["data_digest"]) | 6 << 2
        write("iscsi_framer", name, bytes([flags, CHUNK]) + (VECTORS / f"{name}.bin").read_bytes())
    both = [n for n, m in sorted(manifest.items()) if not m["header_digest"]]
    stream = b"".join((VECTORS / f"{n}.bin").read_bytes() for n in both)
    write("iscsi_framer", "all_plain_vectors", bytes([6 << 2, 7]) + stream)


def login_exchange(flags: int) -> tuple[bytes, bytes]:
    """(initiator -> target, target -> initiator) bytes of a real login with ``flags`` (the
    initiator target's knobs), including what the harness does after it."""
    portal_flags = flags & 3 | (4 if flags & 5 == 5 else 0)
    target = TargetConnection(portal=iscsi_target_login.portal(portal_flags),
                              sessions=SessionTable(), now=0.0)
    initiator = InitiatorConnection(config=iscsi_initiator_login.config(flags), now=0.0)
    to_target, to_initiator = bytearray(), bytearray()
    for _ in range(100):
        out = b"".join(bytes(b) for b in initiator.data_to_send())
        to_target += out
        target.receive_data(out)
        sent: list[bytes] = []
        iscsi_target_login.drain(target, sent)
        back = b"".join(sent)
        to_initiator += back
        initiator.receive_data(back)
        iscsi_initiator_login.drain(initiator, flags)
        if not out and not back:
            break
    return bytes(to_target), bytes(to_initiator)


LOGINS = {"plain": 0, "chap": 1, "mutual_chap": 3, "discovery": 4, "discovery_chap": 5,
          "digests": 8, "chap_digests": 9}


def iscsi_logins() -> None:
    for name, flags in LOGINS.items():
        to_target, to_initiator = login_exchange(flags)
        portal_flags = flags & 3 | (4 if flags & 5 == 5 else 0)
        write("iscsi_target_login", name, bytes([portal_flags, WHOLE]) + to_target)
        write("iscsi_target_login", name + "_bytewise", bytes([portal_flags, 1])
              + to_target[:BHS_LENGTH * 3])
        write("iscsi_target_login", name + "_two_connections",
              bytes([portal_flags | 8, WHOLE]) + to_target)
        write("iscsi_initiator_login", name, bytes([flags, WHOLE]) + to_initiator)
    login_request = (VECTORS / "login_request_operational_digests.bin").read_bytes()
    write("iscsi_target_login", "golden_login_request", bytes([0, WHOLE]) + login_request)


def request(command: int, offset: int = 0, length: int = 0, *, handle: int = 1,
            flags: int = 0, data: bytes = b"") -> bytes:
    return wire.REQUEST_STRUCT.pack(c.REQUEST_MAGIC, flags, command, handle, offset,
                                    length) + data


def requests() -> bytes:
    return b"".join([
        request(c.CMD_WRITE, 0, 1024, handle=1, data=bytes(range(256)) * 4),
        request(c.CMD_READ, 512, 512, handle=2),
        request(c.CMD_FLUSH, handle=3),
        request(c.CMD_TRIM, 4096, 4096, handle=4),
        request(c.CMD_WRITE_ZEROES, 8192, 4096, handle=5, flags=c.CMD_FLAG_NO_HOLE),
        request(c.CMD_BLOCK_STATUS, 0, 65536, handle=6, flags=c.CMD_FLAG_REQ_ONE),
        request(c.CMD_READ, 0, 4096, handle=7, flags=c.CMD_FLAG_DF),
        request(c.CMD_CACHE, 0, 512, handle=8),
        request(c.CMD_DISC, handle=9),
    ])


def nbd() -> None:
    flags = struct.pack(">I", c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES)
    name = struct.pack(">I", 3) + b"vm1"
    query = c.META_BASE_ALLOCATION.encode()
    meta = name + struct.pack(">I", 1) + struct.pack(">I", len(query)) + query
    haggle = {
        "go": handshake(False, False) + requests(),
        "go_structured_meta": handshake(True, True) + requests(),
        "export_name": flags + option(c.OPT_EXPORT_NAME, b"vm1") + requests(),
        "list_info": flags + option(c.OPT_LIST) + option(
            c.OPT_INFO, name + struct.pack(">HHHH", 3, 0, 1, 2)) + option(c.OPT_ABORT),
        "meta_contexts": flags + option(c.OPT_STRUCTURED_REPLY) + option(
            c.OPT_LIST_META_CONTEXT, meta) + option(c.OPT_LIST_META_CONTEXT, name + bytes(4))
        + option(c.OPT_SET_META_CONTEXT, meta) + option(c.OPT_GO, name + bytes(2)),
        "unknown_options": flags + option(c.OPT_STARTTLS) + option(c.OPT_EXTENDED_HEADERS)
        + option(0x7777, b"xyz") + option(c.OPT_PEEK_EXPORT) + option(c.OPT_GO, name + bytes(2)),
    }
    for key, stream in haggle.items():
        write("nbd_handshake", key, bytes([0, CHUNK]) + stream)
    write("nbd_handshake", "second_export", bytes([4, CHUNK]) + flags
          + option(c.OPT_GO, struct.pack(">I", 3) + b"vm2" + bytes(2)) + requests())
    for key, knob in {"simple": 0, "structured": 1, "structured_meta": 3, "read_only": 4,
                      "blocks_4096_eof": 8 | 16 | 3}.items():
        write("nbd_transmission", key, bytes([knob, CHUNK]) + requests())


ADVERT = {
    "kind": "controller", "iqn": "iqn.2026-11.io.difs:ctl1",
    "services": {"integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
                 "security": {"authentication": ["chap", "mutual_chap"], "tls": True},
                 "qos": {"reservation": True, "limit": True, "dscp_classes": [0, 34, 46]},
                 "isolation": {"exclusive": True, "vlans": [100]}},
    "portals": [{"address": "127.0.0.1", "port": 3260},
                {"address": "127.0.0.1", "port": 3261, "tls": True}],
    "containers": [{"name": "c1", "capacity_bytes": 1 << 30, "pi_types": [1, 3]}],
    "lease_seconds": 30,
}
POLICY_TOML = b"""name = "gold-toml"
description = "from TOML"
[services.integrity]
header_digest = true
data_digest = true
protection_information = 1
[services.qos]
reservation_iops = 100
limit_iops = 500
dscp = "af41"
[services.isolation]
exclusive = true
tag = "blue"
"""
CONTROLLER_TOML = b"""[controller]
name = "ctl1"
portals = ["127.0.0.1:3260"]
data_dir = "/nonexistent/difs"
nop_interval = 5.0
[[volume]]
name = "db"
size = "64M"
pi_type = 1
chap = { user = "u", secret = "s3cret-s3cret" }
[[volume]]
name = "logs"
size = 1048576
read_only = true
allowed_initiators = ["iqn.2026-11.io.difs:h1"]
"""


def policies() -> None:
    for name, document in DEFAULT_TIERS.items():
        text = document.model_dump_json().encode()
        write("policy_documents", f"tier_{name}", b"\x00" + text)
        services = document.services.model_dump_json(exclude_none=True).encode()
        write("policy_documents", f"services_{name}", b"\x01" + services)
    write("policy_documents", "advertisement", b"\x02" + json.dumps(ADVERT).encode())
    write("policy_documents", "policy_toml", b"\x04" + POLICY_TOML)
    write("policy_documents", "controller_toml", b"\x03" + CONTROLLER_TOML)


BODIES = {
    "AdvertisementIn": ADVERT,
    "AppPolicySet": {"policy": "gold"},
    "ApplicationCreate": {"name": "db", "size_bytes": 1 << 20, "policy": "silver"},
    "BindRequest": {"initiator_iqn": "iqn.2026-11.io.difs:h1", "host": "h1"},
    "ContainerCreate": {"name": "c1", "controller": "ctl1", "capacity_bytes": 1 << 30,
                        "pi_types": [1]},
    "ContainerUpdate": {"capacity_bytes": 1 << 31},
    "NodeRegister": {"name": "ctl1", "kind": "controller"},
    "PathStat": {"application": "db", "controller": "ctl1", "channel": 0, "ios": 5,
                 "latency_ms": 0.5},
    "PathStatsReport": {"window_seconds": 10, "paths": [
        {"application": "db", "controller": "ctl1", "channel": 1, "bytes": 4096}]},
    "PlacementRequest": {"size_bytes": 4096, "services": {"integrity": {"data_digest": True}}},
    "PolicyChoice": {"services": {"qos": {"limit_iops": 100}}},
    "PolicyCreate": {"name": "p1", "description": "d", "services": json.loads(
        DEFAULT_TIERS["gold"].services.model_dump_json(exclude_none=True))},
    "PolicyUpdate": {"description": "new", "services": {"security": {"authentication": "chap"}}},
    "VolumeCreate": {"application": "db", "size_bytes": 8192},
    "VolumeResize": {"size_bytes": 12288},
}


def schemas() -> None:
    from fuzz.manager_schemas import SCHEMAS

    for index, model in enumerate(SCHEMAS):
        body = BODIES.get(model.__name__, {})
        write("manager_schemas", model.__name__, bytes([index]) + json.dumps(body).encode())


def build() -> None:
    iscsi_framer()
    iscsi_logins()
    nbd()
    policies()
    schemas()
