"""Offline tools for a controller's data directory (run them while the controller is stopped,
or accept that a running controller may have the block cached in nothing but the page
cache - the file is what the controller reads, so a flip is seen by the next read).

``python -m difs.controller.tools flip --data-dir DIR --volume NAME --offset N [--bit B]``
    flips bit ``B`` (0-7, default 0) of byte ``N`` of the volume's stored data
    (``NAME.img``), or of its stored PI with ``--pi`` (``NAME.pi``; byte ``8 * LBA + k`` is
    byte ``k`` of the block's tuple, stored complemented).  It simulates corruption at
    rest: on a PI-formatted volume the next read of that block fails its guard check
    (ABORTED COMMAND 10h/01h: an I/O error for qemu-io / libiscsi) - never silently wrong
    data; on a volume without PI nothing notices, the corrupted byte is returned as data
    (that is what an integrity policy is for).

Prints one line saying what changed: ``flipped bit B of byte N of FILE (LBA L): XX -> YY``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from difs.controller.volumes import VolumeDirectory, VolumeError


def flip(data_dir: Path, volume: str, offset: int, bit: int = 0, *, pi: bool = False) -> str:
    """Flip one stored bit; returns the description printed by the command."""
    if not 0 <= bit <= 7:
        raise ValueError("--bit is 0..7")
    directory = VolumeDirectory(data_dir)
    meta = directory.load(volume)
    if pi:
        if not meta.pi_type:
            raise VolumeError(f"volume {volume!r} has no protection information to corrupt")
        path, size, per_block = directory.pi_path(volume), meta.num_blocks * 8, 8
    else:
        path, size, per_block = directory.data_path(volume), meta.size, meta.block_size
    if not 0 <= offset < size:
        raise ValueError(f"--offset {offset} is outside {path.name} (0..{size - 1})")
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, offset) or b"\x00"
        new = bytes((old[0] ^ (1 << bit),))
        os.pwrite(fd, new, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return (f"flipped bit {bit} of byte {offset} of {path} (LBA {offset // per_block}): "
            f"{old[0]:02x} -> {new[0]:02x}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m difs.controller.tools",
                                     description="Offline tools for a controller's volumes.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("flip", help="flip one bit of a volume's stored data (or PI)")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--volume", required=True)
    p.add_argument("--offset", required=True, type=lambda t: int(t, 0),
                   help="byte offset in the volume's data (or PI with --pi)")
    p.add_argument("--bit", type=int, default=0, help="bit 0..7 (default 0)")
    p.add_argument("--pi", action="store_true", help="flip a bit of the stored PI instead")
    args = parser.parse_args(argv)
    try:
        print(flip(args.data_dir, args.volume, args.offset, args.bit, pi=args.pi))
    except (VolumeError, ValueError, OSError) as exc:
        print(f"difs.controller.tools: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
