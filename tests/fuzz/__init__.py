"""Coverage-guided fuzz targets (atheris / libFuzzer) for every parser fed by a peer or a user.

One module per parser; each exposes ``TestOneInput(data: bytes)``, the libFuzzer entry point,
and ``MAX_INPUT`` (longer inputs are cut: the targets look for wrong answers, not for slow
ones). A target returns quietly when the parser accepted the input or refused it with its own
documented error (the iSCSI error tree, an NBD error reply or ProtocolViolation event, pydantic's
ValidationError, PolicyValidationError); anything else escaping (IndexError, struct.error,
KeyError, RecursionError, UnicodeDecodeError, a failed oracle assertion ...) is a finding.

The first bytes of an input are knobs (which configuration, how to cut the stream into
receive chunks); see :func:`knobs`. Seeds live in ``corpus/<target>/`` (built from the golden
vectors and from real exchanges between difs' own cores by ``python -m fuzz seeds``).

Run one for a while with ``scripts/fuzz.sh TARGET SECONDS`` (atheris); the test suite runs
each briefly (tests/fuzz/test_fuzz_targets.py), with hypothesis-made bytes when atheris is not
installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

#: target name -> module (tests/fuzz/<module>.py)
TARGETS = (
    "iscsi_framer",
    "iscsi_target_login",
    "iscsi_initiator_login",
    "nbd_handshake",
    "nbd_transmission",
    "policy_documents",
    "manager_schemas",
)

CORPUS = Path(__file__).resolve().parent / "corpus"


def load(name: str) -> ModuleType:
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; known: {', '.join(TARGETS)}")
    return importlib.import_module(f"fuzz.{name}")


def knobs(data: bytes, count: int) -> tuple[bytes, bytes]:
    """The first ``count`` bytes of ``data`` as knobs (zero-padded), and the rest."""
    head = data[:count]
    return head + bytes(count - len(head)), data[count:]


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into ``size``-byte receive chunks (at least one, maybe empty)."""
    size = max(1, size)
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def pdu_pieces(framer, stream: bytes):
    """``stream`` cut into one iSCSI PDU per piece, sized as ``framer`` (the receiving
    connection's, whose digest settings change after login) will frame it: what an adapter
    reading exactly one PDU at a time delivers. While the framer checks digests, the piece's
    digests are rewritten to match, so mutated PDUs get past them to the parsers. The bytes
    left at the end come last."""
    pos = 0
    while pos < len(stream):
        head = stream[pos:pos + 48]
        if len(head) < 48:
            yield head
            return
        length = int.from_bytes(head[5:8], "big")
        header_end = 48 + head[4] * 4
        padded = (length + 3) & ~3
        hd, dd = framer.header_digest, bool(length) and framer.data_digest
        size = header_end + padded + 4 * hd + 4 * dd
        piece = stream[pos:pos + size]
        pos += size
        if len(piece) == size and (hd or dd):
            piece = _with_digests(piece, header_end, padded, hd, dd)
        yield piece


def _with_digests(piece: bytes, header_end: int, padded: int, hd: bool, dd: bool) -> bytes:
    from difs.iscsi.digest import data_digest, header_digest

    header = piece[:header_end]
    data = piece[header_end + 4 * hd:][:padded]
    return (header + (header_digest(header) if hd else b"") + data
            + (data_digest(data) if dd else b""))


def pieces(framer, stream: bytes, knob: int):
    """Receive chunks: one PDU at a time for knob 0, else ``knob``-byte chunks."""
    return pdu_pieces(framer, stream) if knob == 0 else iter(chunks(stream, knob))
