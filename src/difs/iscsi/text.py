"""Text key=value codec (RFC 7143 6.1, 6.2): the data segment of Login and Text PDUs.

A text data segment is a sequence of ``key=value`` strings, each terminated by a NUL byte. A long
text may be split over several PDUs with the C (continue) bit; the split may fall anywhere, even
inside a pair. ``TextAccumulator`` reassembles it.

Values can be decimal numbers, ``0x`` hexadecimal or ``0b`` base64 constants (numbers and binary
values, e.g. CHAP challenges), or simple strings. Helpers: ``pull_number`` / ``encode_number``,
``pull_binary`` / ``encode_binary``.
"""

from __future__ import annotations

import base64
import binascii
import re

from .constants import RejectReason
from .errors import TextError

MAX_KEY_LENGTH = 63
MAX_VALUE_LENGTH = 8192  # binary values (CHAP) are the long ones; simple values are <= 255
MAX_TEXT_LENGTH = 65536  # one negotiation's text across all its PDUs

_KEY_RE = re.compile(r"[A-Za-z0-9.\-+@_#]+\Z")

# Special responses (RFC 7143 6.2)
REJECT = "Reject"
IRRELEVANT = "Irrelevant"
NOT_UNDERSTOOD = "NotUnderstood"


def pull_text(data: bytes | memoryview) -> list[tuple[str, str]]:
    """Pairs from a complete text data segment (padding NULs and a final empty string allowed)."""
    raw = bytes(data)
    if len(raw) > MAX_TEXT_LENGTH:
        raise TextError(f"text of {len(raw)} bytes is too long")
    pairs = []
    for item in raw.split(b"\x00"):
        if not item:
            continue
        key_b, sep, value_b = item.partition(b"=")
        if not sep:
            raise TextError(f"text item without '=': {item[:64]!r}",
                            reject_reason=RejectReason.PROTOCOL_ERROR)
        try:
            key = key_b.decode("ascii")
            value = value_b.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextError(f"text is not valid UTF-8: {exc}") from None
        if len(key_b) > MAX_KEY_LENGTH or not _KEY_RE.match(key):
            raise TextError(f"invalid key name {key[:80]!r}")
        if len(value_b) > MAX_VALUE_LENGTH:
            raise TextError(f"value of {key} is too long ({len(value_b)} bytes)")
        pairs.append((key, value))
    return pairs


def encode_text(pairs: list[tuple[str, str]] | dict[str, str]) -> bytes:
    """NUL-terminated ``key=value`` strings."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(f"{k}={v}".encode() + b"\x00" for k, v in items)


def split_text(text: bytes, size: int) -> list[bytes]:
    """Cut a text into pieces of at most ``size`` bytes (for C-bit continuation)."""
    if not text:
        return [b""]
    return [text[i:i + size] for i in range(0, len(text), size)]


class TextAccumulator:
    """Reassembles a text spread over PDUs with the C bit."""

    __slots__ = ("_parts", "_length")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._length = 0

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def feed(self, data: bytes | memoryview, *, more: bool) -> list[tuple[str, str]] | None:
        """Add a PDU's text; returns the pairs once the final piece (``more=False``) arrived."""
        self._length += len(data)
        if self._length > MAX_TEXT_LENGTH:
            self.reset()
            raise TextError("continued text is too long")
        self._parts.append(bytes(data))
        if more:
            return None
        text = b"".join(self._parts)
        self.reset()
        return pull_text(text)

    def reset(self) -> None:
        self._parts = []
        self._length = 0


def pull_number(value: str) -> int:
    """A numerical value: decimal, ``0x`` hex or ``0b`` base64 (RFC 7143 5.1)."""
    try:
        if value[:2] in ("0x", "0X"):
            return int(value[2:], 16)
        if value[:2] in ("0b", "0B"):
            return int.from_bytes(base64.b64decode(value[2:], validate=True), "big")
        if not value.isdigit() or not value.isascii():
            raise ValueError(value)
        return int(value, 10)
    except (ValueError, binascii.Error):
        raise TextError(f"invalid numerical value {value[:40]!r}") from None


def encode_number(number: int) -> str:
    return str(number)


def pull_binary(value: str) -> bytes:
    """A binary value (``0x`` hex or ``0b`` base64), e.g. CHAP_C / CHAP_R."""
    try:
        if value[:2] in ("0x", "0X"):
            digits = value[2:]
            if len(digits) % 2:
                digits = "0" + digits
            return bytes.fromhex(digits)
        if value[:2] in ("0b", "0B"):
            return base64.b64decode(value[2:], validate=True)
    except (ValueError, binascii.Error):
        pass
    raise TextError(f"invalid binary value {value[:40]!r}")


def encode_binary(data: bytes, *, use_base64: bool = False) -> str:
    if use_base64:
        return "0b" + base64.b64encode(data).decode("ascii")
    return "0x" + data.hex()
