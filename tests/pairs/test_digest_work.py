"""Both cores count the CRC32C work they do: what the demo and the metrics report."""

import pytest

from difs.iscsi.initiator_events import CommandComplete

from .helpers import ConnectionPair, initiator_config, read10, write10


@pytest.mark.parametrize("digests", [False, True])
def test_digest_work_is_counted_only_when_negotiated(digests: bool) -> None:
    wish = ("CRC32C",) if digests else ("None",)
    pair = ConnectionPair(initiator=initiator_config(header_digest=wish, data_digest=wish))
    pair.pump()
    before_i, before_t = pair.initiator.digest_work, pair.target.digest_work
    assert before_i == before_t == (0, 0)  # login PDUs are never digested
    pair.initiator.submit_command(0, write10(0, 8), data_out=bytes(range(256)) * 16)
    pair.pump()
    pair.initiator.submit_command(0, read10(0, 8), expected_in_length=4096)
    pair.pump()
    done = pair.events_of("initiator", CommandComplete)
    assert [c.status for c in done] == [0, 0]
    count_i, bytes_i = pair.initiator.digest_work
    count_t, bytes_t = pair.target.digest_work
    if not digests:
        assert (count_i, bytes_i, count_t, bytes_t) == (0, 0, 0, 0)
        return
    # every PDU each way has a header digest; the 4 KiB written and read have data digests
    assert count_i == count_t >= 6
    assert bytes_i == bytes_t >= 2 * 4096 + 4 * 48
