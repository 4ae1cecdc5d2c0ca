"""Capture real libiscsi / QEMU iSCSI sessions PDU by PDU and curate golden vectors from them.

Run from the repository root (the tools of ./scripts/setup.sh must be installed)::

    PYTHONPATH=src .venv/bin/python tests/tools/capture_iscsi.py --out /tmp/iscsi-capture
    PYTHONPATH=src .venv/bin/python tests/tools/capture_iscsi.py --out /tmp/iscsi-capture \\
        --vectors tests/unit/vectors/iscsi        # also (re)write the curated vectors

It starts a real ``difs controller`` (``python -m difs.cli.main controller``) on a free loopback
port, puts a capture proxy in front of it and runs the scenarios of ``SCENARIOS`` (iscsi-ls,
iscsi-inq with and without CHAP and header digests, iscsi-readcapacity16, iscsi-perf for a
moment, iscsi-test-cu's READ16/WRITE16/TMF tests, qemu-io and qemu-img) against the proxy.

The proxy cuts each direction of each TCP connection into PDUs with its own minimal framer
(independent of ``difs.iscsi.framer``, so the vectors are not shaped by the code they test). It
follows the negotiation: once the target's final Login Response has declared
``HeaderDigest``/``DataDigest`` = CRC32C, the next PDU of each direction carries digests. Every
PDU is written as it went over the wire (BHS, AHS, digests, data and padding) to
``OUT/<scenario>/<connection>-<seq>-<c2t|t2c>-<opcode>.bin`` with an ``index.json``.

``--vectors DIR`` then picks the PDUs named in ``VECTORS`` (first match of a scenario, direction
and predicate) and copies them to ``DIR/<name>.bin`` with ``DIR/manifest.json``. ISIDs, ITTs,
CHAP challenges and sequence numbers differ from run to run: after a recapture, update the
concrete values asserted in ``tests/unit/iscsi/test_golden_vectors.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support.py

from support import controller, free_port, need_tool  # noqa: E402

INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INITIATOR_2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
CHAP_USER, CHAP_SECRET = "alice", "alice-secret-123"

OPNAMES = {0x00: "nop-out", 0x01: "scsi-command", 0x02: "tmf-request", 0x03: "login-request",
           0x04: "text-request", 0x05: "data-out", 0x06: "logout-request", 0x10: "snack",
           0x20: "nop-in", 0x21: "scsi-response", 0x22: "tmf-response", 0x23: "login-response",
           0x24: "text-response", 0x25: "data-in", 0x26: "logout-response", 0x31: "r2t",
           0x32: "async-message", 0x3F: "reject"}


# ---------------------------------------------------------------------------------------------
# The capture proxy
# ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One PDU as it went over the wire."""

    scenario: str
    connection: int
    seq: int
    direction: str  # "c2t" (initiator -> target) or "t2c"
    raw: bytes
    header_digest: bool
    data_digest: bool

    @property
    def opcode(self) -> int:
        return self.raw[0] & 0x3F

    @property
    def data_length(self) -> int:
        return int.from_bytes(self.raw[5:8], "big")

    @property
    def data(self) -> bytes:
        start = 48 + self.raw[4] * 4 + (4 if self.header_digest else 0)
        return self.raw[start:start + self.data_length]

    @property
    def keys(self) -> dict[str, str]:
        """key=value pairs of a Login/Text data segment (last value wins)."""
        out = {}
        for item in self.data.split(b"\x00"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                out[key] = value
        return out

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.raw[offset:offset + 4], "big")

    @property
    def name(self) -> str:
        return (f"{self.connection:03d}-{self.seq:05d}-{self.direction}-"
                f"{OPNAMES.get(self.opcode, f'op{self.opcode:02x}')}")


class _Direction:
    """Cuts one direction of a connection into PDUs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = bytearray()
        self.header_digest = False
        self.data_digest = False

    def pdus(self, data: bytes) -> list[tuple[bytes, bool, bool]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 48:
            ahs = self.buffer[4] * 4
            dsl = int.from_bytes(self.buffer[5:8], "big")
            total = 48 + ahs + ((dsl + 3) & ~3)
            total += 4 if self.header_digest else 0
            total += 4 if dsl and self.data_digest else 0
            if len(self.buffer) < total:
                break
            out.append((bytes(self.buffer[:total]), self.header_digest, self.data_digest))
            del self.buffer[:total]
        return out


class CaptureProxy:
    """A loopback TCP proxy recording every PDU of every connection, tagged with ``scenario``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.scenario = "unnamed"
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._connections = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
                number = self._connections
            thread = threading.Thread(target=self._serve, args=(client, number, self.scenario),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, number: int, scenario: str) -> None:
        server = socket.create_connection(self.upstream)
        sides = {client: (server, _Direction("c2t")), server: (client, _Direction("t2c"))}
        to_initiator = sides[server][1]
        to_target = sides[client][1]
        seq = 0
        digests: dict[str, str] = {}
        try:
            while True:
                ready, _, _ = select.select(list(sides), [], [], 1.0)
                for sock in ready:
                    data = sock.recv(1 << 20)
                    if not data:
                        return
                    peer, direction = sides[sock]
                    for raw, hd, dd in direction.pdus(data):
                        seq += 1
                        record = Record(scenario, number, seq, direction.name, raw, hd, dd)
                        with self._lock:
                            self.records.append(record)
                        if record.opcode == 0x23:  # Login Response: follow the negotiation
                            digests.update({k: v for k, v in record.keys.items()
                                            if k in ("HeaderDigest", "DataDigest")})
                            final = raw[1] & 0x83 == 0x83 and raw[36] == 0
                            if final:  # digests start with the next PDU of each direction
                                for d in (to_initiator, to_target):
                                    d.header_digest = digests.get("HeaderDigest") == "CRC32C"
                                    d.data_digest = digests.get("DataDigest") == "CRC32C"
                    peer.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every proxied connection has ended."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._listener.close()


# ---------------------------------------------------------------------------------------------
# Scenarios: real clients against the proxy
# ---------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    portal: str
    iqn: Callable[[str], str]

    def url(self, volume: str, *, auth: str = "", query: str = "") -> str:
        url = f"iscsi://{auth}{self.portal}/{self.iqn(volume)}/0"
        return url + (f"?{query}" if query else "")


@dataclass
class Scenario:
    name: str
    tools: tuple[str, ...]
    commands: Callable[[Ctx], list[list[str]]]
    #: seconds after which the command is interrupted (SIGINT), None: runs to the end
    interrupt_after: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: False: the PDUs matter, not the tool's verdict
    check: bool = True


def _qemu_io(ctx: Ctx) -> list[list[str]]:
    url = ctx.url("plain")
    return [["qemu-io", "-f", "raw", "-c", "write -P 0xa5 0 260k", "-c", "read -P 0xa5 0 260k",
             url],
            ["qemu-img", "info", url]]


SCENARIOS = [
    Scenario("discovery", ("iscsi-ls",),
             lambda c: [["iscsi-ls", "-i", INITIATOR, f"iscsi://{c.portal}"]]),
    Scenario("inq-chap", ("iscsi-inq",),
             lambda c: [["iscsi-inq", "-i", INITIATOR,
                         c.url("secure", auth=f"{CHAP_USER}%{CHAP_SECRET}@")]]),
    Scenario("inq-header-digest", ("iscsi-inq",),
             lambda c: [["iscsi-inq", "-i", INITIATOR,
                         c.url("digest", query="header_digest=crc32c")]]),
    Scenario("readcapacity16", ("iscsi-readcapacity16",),
             lambda c: [["iscsi-readcapacity16", "-i", INITIATOR, c.url("plain")]]),
    Scenario("perf", ("iscsi-perf",),
             lambda c: [["iscsi-perf", "-i", INITIATOR, "-m", "2", "-b", "1", c.url("plain")]],
             interrupt_after=3.0),
    Scenario("test-cu", ("iscsi-test-cu",),
             lambda c: [["iscsi-test-cu", "-d", "-i", INITIATOR, "-I", INITIATOR_2, "-t",
                         ("SCSI.Read16.Simple,SCSI.Write16.Simple,SCSI.Read16.BeyondEol,"
                          "iSCSI.iSCSITMF.AbortTaskSimpleAsync,SCSI.Reserve6.LUNReset"),
                         c.url("plain")]],
             check=False),
    Scenario("qemu", ("qemu-io", "qemu-img"), _qemu_io),
]

CONTROLLER_TOML = f"""\
[controller]
nop_interval = 1.0

[[volume]]
name = "plain"
size = "16M"

[[volume]]
name = "secure"
size = "16M"
chap = {{ user = "{CHAP_USER}", secret = "{CHAP_SECRET}" }}

[[volume]]
name = "digest"
size = "16M"
require_header_digest = true
"""


def run_scenario(proxy: CaptureProxy, ctx: Ctx, scenario: Scenario) -> None:
    proxy.settle()
    proxy.scenario = scenario.name
    for cmd in scenario.commands(ctx):
        print(f"[{scenario.name}] {' '.join(cmd)}", flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **scenario.env})
        try:
            out, _ = proc.communicate(timeout=scenario.interrupt_after or 300)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        if scenario.check and scenario.interrupt_after is None and proc.returncode != 0:
            raise SystemExit(f"{cmd[0]} exited {proc.returncode}:\n{out}")
    proxy.settle()


def capture(out: Path) -> list[Record]:
    need_tool(*(t for s in SCENARIOS for t in s.tools))
    with tempfile.TemporaryDirectory(prefix="difs-capture-") as tmp:
        config = Path(tmp) / "controller.toml"
        config.write_text(CONTROLLER_TOML)
        with controller(Path(tmp) / "data", "--config", str(config), volumes=3) as ctl:
            proxy = CaptureProxy((ctl.host, ctl.port))
            ctx = Ctx(proxy.portal, ctl.iqn)
            try:
                for scenario in SCENARIOS:
                    run_scenario(proxy, ctx, scenario)
            finally:
                proxy.close()
    records = sorted(proxy.records, key=lambda r: (r.connection, r.seq))
    if out.exists():
        shutil.rmtree(out)
    index = []
    for record in records:
        folder = out / record.scenario
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record.name}.bin").write_bytes(record.raw)
        index.append({"file": f"{record.scenario}/{record.name}.bin",
                      "header_digest": record.header_digest, "data_digest": record.data_digest})
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return records


# ---------------------------------------------------------------------------------------------
# Curation: which captured PDUs become golden vectors
# ---------------------------------------------------------------------------------------------

Pick = Callable[[Record, list[Record]], bool]


def _op(opcode: int, extra: Pick | None = None) -> Pick:
    return lambda r, rs: r.opcode == opcode and (extra is None or extra(r, rs))


def _cdb0(record: Record) -> int:
    return record.raw[32]


def _answers(request_pick: Pick) -> Pick:
    """A target PDU whose ITT is that of the first initiator PDU ``request_pick`` selects in the
    same connection."""
    def pick(r: Record, rs: list[Record]) -> bool:
        for q in rs:
            if q.connection == r.connection and q.direction == "c2t" and q.seq < r.seq \
                    and request_pick(q, rs):
                return q.u32(16) == r.u32(16)
        return False
    return pick


def _asked_by(response_pick: Pick) -> Pick:
    """The initiator PDU whose ITT the first target PDU ``response_pick`` selects answers."""
    def pick(r: Record, rs: list[Record]) -> bool:
        answer = next((a for a in rs if a.direction == "t2c" and response_pick(a, rs)), None)
        return answer is not None and answer.connection == r.connection \
            and answer.u32(16) == r.u32(16)
    return pick


def _read16(r: Record, rs: list[Record]) -> bool:
    return r.opcode == 0x01 and _cdb0(r) == 0x88


def _read16_data_with_status(r: Record, rs: list[Record]) -> bool:
    return r.raw[1] & 0x81 == 0x81 and r.data_length > 0 and _answers(_read16)(r, rs)


def _r2t_data_out(r: Record, rs: list[Record]) -> bool:
    """A Data-Out answering an R2T (TTT not 0xffffffff) of its connection."""
    return r.u32(20) != 0xFFFFFFFF


def _nop_in_ping(r: Record, rs: list[Record]) -> bool:
    return r.u32(20) != 0xFFFFFFFF


def _nop_out_answer(r: Record, rs: list[Record]) -> bool:
    return r.u32(20) != 0xFFFFFFFF and r.u32(16) == 0xFFFFFFFF


def _sense(r: Record, rs: list[Record]) -> bool:
    """CHECK CONDITION, ILLEGAL REQUEST (READ16 beyond the end of the volume)."""
    return r.raw[3] == 0x02 and r.data_length > 4 and r.data[4] & 0x0F == 0x05


def _tmf(function: int) -> Pick:
    return lambda r, rs: r.raw[1] & 0x7F == function


def _tmf_answer(function: int) -> Pick:
    return _answers(_op(0x02, _tmf(function)))


#: name -> (scenario, direction, predicate, what it is)
VECTORS: dict[str, tuple[str, str, Pick, str]] = {
    "login_request_chap_security": (
        "inq-chap", "c2t", _op(0x03, lambda r, rs: "AuthMethod" in r.keys),
        "first Login Request: security stage, AuthMethod=CHAP,None"),
    "login_response_chap_method": (
        "inq-chap", "t2c", _op(0x23, lambda r, rs: "AuthMethod" in r.keys),
        "Login Response choosing AuthMethod=CHAP"),
    "login_request_chap_a": (
        "inq-chap", "c2t", _op(0x03, lambda r, rs: "CHAP_A" in r.keys),
        "Login Request offering CHAP_A"),
    "login_response_chap_challenge": (
        "inq-chap", "t2c", _op(0x23, lambda r, rs: "CHAP_C" in r.keys),
        "Login Response with CHAP_A, CHAP_I, CHAP_C"),
    "login_request_chap_response": (
        "inq-chap", "c2t", _op(0x03, lambda r, rs: "CHAP_R" in r.keys),
        "Login Request with CHAP_N, CHAP_R, transit to the operational stage"),
    "login_response_chap_ok": (
        "inq-chap", "t2c", _op(0x23, lambda r, rs: r.raw[1] & 0x8F == 0x81),
        "Login Response granting the transit to the operational stage"),
    "login_request_operational_digests": (
        "inq-chap", "c2t", _op(0x03, lambda r, rs: "HeaderDigest" in r.keys),
        "Login Request, operational stage: HeaderDigest, DataDigest and the session keys"),
    "login_response_final": (
        "inq-chap", "t2c", _op(0x23, lambda r, rs: r.raw[1] & 0x83 == 0x83),
        "final Login Response: Full Feature Phase, TSIH"),
    "login_request_discovery": (
        "discovery", "c2t", _op(0x03), "Discovery session: one operational-stage Login Request"),
    "login_response_discovery": (
        "discovery", "t2c", _op(0x23), "its Login Response (Irrelevant session keys)"),
    "text_request_sendtargets": (
        "discovery", "c2t", _op(0x04), "Text Request SendTargets=All"),
    "text_response_sendtargets": (
        "discovery", "t2c", _op(0x24), "Text Response: TargetName/TargetAddress list"),
    "scsi_command_read16": (
        "perf", "c2t", _read16, "SCSI Command READ(16) of one block"),
    "data_in_with_status": (
        "perf", "t2c", _op(0x25, _read16_data_with_status),
        "Data-In answering that READ(16): the block and the status (F and S bits)"),
    "scsi_command_write16_immediate": (
        "test-cu", "c2t", _op(0x01, lambda r, rs: _cdb0(r) == 0x8A and r.data_length > 0),
        "SCSI Command WRITE(16) with immediate data"),
    "scsi_response_write16": (
        "test-cu", "t2c",
        _op(0x21, _answers(_op(0x01, lambda r, rs: _cdb0(r) == 0x8A and r.data_length > 0))),
        "SCSI Response GOOD to that WRITE(16)"),
    "scsi_command_read16_beyond_eol": (
        "test-cu", "c2t", _op(0x01, _asked_by(_op(0x21, _sense))),
        "SCSI Command READ(16) past the last block (the command the sense answers)"),
    "scsi_response_sense": (
        "test-cu", "t2c", _op(0x21, _sense), "SCSI Response CHECK CONDITION with sense data"),
    "r2t": ("qemu", "t2c", _op(0x31), "R2T for the part of a write past the first burst"),
    "data_out": ("qemu", "c2t", _op(0x05, _r2t_data_out), "Data-Out answering that R2T"),
    "nop_in_ping": ("perf", "t2c", _op(0x20, _nop_in_ping),
                    "NOP-In ping from the target (TTT set, ITT reserved)"),
    "nop_out_reply": ("perf", "c2t", _op(0x00, _nop_out_answer),
                      "NOP-Out answering the ping (TTT echoed)"),
    "tmf_request_abort_task": ("test-cu", "c2t", _op(0x02, _tmf(1)),
                               "Task Management Request ABORT TASK"),
    "tmf_response_abort_task": ("test-cu", "t2c", _op(0x22, _tmf_answer(1)),
                                "Task Management Response to ABORT TASK"),
    "tmf_request_lun_reset": ("test-cu", "c2t", _op(0x02, _tmf(5)),
                              "Task Management Request LOGICAL UNIT RESET"),
    "tmf_response_lun_reset": ("test-cu", "t2c", _op(0x22, _tmf_answer(5)),
                               "Task Management Response to LOGICAL UNIT RESET"),
    "logout_request": ("readcapacity16", "c2t", _op(0x06), "Logout Request (close session)"),
    "logout_response": ("readcapacity16", "t2c", _op(0x26), "Logout Response"),
    "scsi_command_header_digest": (
        "inq-header-digest", "c2t", _op(0x01), "SCSI Command with a CRC32C header digest"),
    "scsi_response_header_digest": (
        "inq-header-digest", "t2c", _op(0x21), "SCSI Response with a CRC32C header digest"),
}


def curate(records: list[Record], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        old.unlink()
    manifest = {}
    chosen: list[tuple[str, Record, str]] = []
    for name, (scenario, direction, pick, what) in VECTORS.items():
        found = next((r for r in records if r.scenario == scenario
                      and r.direction == direction and pick(r, records)), None)
        if found is None:
            raise SystemExit(f"no PDU for vector {name} in scenario {scenario}")
        chosen.append((name, found, what))
    for name, record, what in chosen:
        (out / f"{name}.bin").write_bytes(record.raw)
        manifest[name] = {"what": what, "scenario": record.scenario,
                          "direction": record.direction, "opcode": record.opcode,
                          "header_digest": record.header_digest,
                          "data_digest": record.data_digest, "size": len(record.raw)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(manifest)} vectors written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where every PDU is written")
    parser.add_argument("--vectors", type=Path, help="also write the curated vectors here")
    args = parser.parse_args()
    records = capture(args.out)
    print(f"{len(records)} PDUs captured in {args.out}")
    if args.vectors is not None:
        curate(records, args.vectors)


if __name__ == "__main__":
    main()
