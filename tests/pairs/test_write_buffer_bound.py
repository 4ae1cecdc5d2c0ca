"""A connection's Data-Out buffers are bounded (issue 17, bounded resources): writes that
announce more data than the connection may hold while it arrives are answered TASK SET FULL
(retryable) at their turn, without a buffer, instead of command window x 256 MiB each."""

from __future__ import annotations

from difs.iscsi import target_io
from difs.iscsi.pdu import ScsiCommand, ScsiResponse, encode_pdu
from difs.sam.status import TASK_SET_FULL

from .helpers import write10
from .test_io_pairs import logged_in, wire_pdus


def test_writes_past_the_buffer_bound_are_answered_task_set_full(monkeypatch) -> None:
    monkeypatch.setattr(target_io, "MAX_BUFFERED_WRITES", 1 << 20)
    pair = logged_in(auto_complete=False)
    target = pair.target
    exp = target.session.exp_cmd_sn
    size = 400 << 10  # no data sent: each waits for its Data-Out, holding a 400 KiB buffer
    raw = b"".join(
        encode_pdu(ScsiCommand(itt=100 + i, cdb=write10(0, size // 512), write=True,
                               expected_length=size, cmdsn=(exp + i) & 0xFFFFFFFF))
        for i in range(5))
    target.receive_data(raw)
    assert target.write_buffered == 2 * size  # two buffers; the other three never got one
    pdus = wire_pdus([b"".join(bytes(c) for c in target.data_to_send())])
    full = [p for p in pdus if isinstance(p, ScsiResponse)]
    assert sorted(p.itt for p in full) == [102, 103, 104]
    assert all(p.status == TASK_SET_FULL for p in full)
    # the connection keeps working, and its buffers are returned when it closes
    assert not target.closed
    target.close()
    assert target.write_buffered == 0
