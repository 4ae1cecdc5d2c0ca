"""Human sizes and portal addresses, parsed the way storage tools spell them.

Sizes follow qemu-img: a number with an optional binary suffix (K, M, G, T, P;
``KiB`` and ``K`` both mean 1024). Portals are ``HOST:PORT`` with IPv6 hosts in
brackets (``[::1]:3260``), as iSCSI TargetAddress and libiscsi URLs write them.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """Return the size in bytes of ``text`` such as ``64M``, ``1GiB`` or ``4096``."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(
            f"invalid size {text!r}: write a number of bytes with an optional suffix K, M, G, T "
            "(binary units), e.g. 64M or 1G"
        )
    return int(match.group(1)) * _SCALE[match.group(2).lower()]


def format_size(size: int) -> str:
    """The shortest exact binary spelling of ``size`` (``1G``, ``1536M``, ``4097``)."""
    for suffix in ("P", "T", "G", "M", "K"):
        scale = _SCALE[suffix.lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)


def parse_portal(text: str, default_port: int = 3260) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` / ``[V6]:PORT`` into (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid portal {text!r}: write [IPV6]:PORT, e.g. [::1]:3260")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"invalid portal {text!r}: put IPv6 addresses in brackets, e.g. [::1]:3260")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"invalid portal {text!r}: the host is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid portal {text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def format_portal(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
