"""What the fuzz-style tests share: hypothesis edits to a byte string and applying them."""

from __future__ import annotations

from hypothesis import strategies as st

#: up to six edits: (0 overwrite a byte | 1 delete a run | 2 insert a run, position, value)
edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)),
                 max_size=6)


def mutate(data: bytes, changes: list[tuple[int, int, int]]) -> bytes:
    """``data`` with ``changes`` (drawn from :data:`edits`) applied in order."""
    buf = bytearray(data)
    for kind, position, value in changes:
        if not buf:
            break
        pos = position % len(buf)
        if kind == 0:
            buf[pos] = value
        elif kind == 1:
            del buf[pos:pos + (value % 8) + 1]
        else:
            buf[pos:pos] = bytes([value]) * ((value % 5) + 1)
    return bytes(buf)
