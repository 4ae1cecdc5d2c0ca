"""Bounds of the handshake in the NBD core: deadlines fed as time, a small buffer until an
export is chosen (issue 17, finding 3)."""

from __future__ import annotations

from nbd_testlib import (
    client_flags,
    feed,
    go_payload,
    new_connection,
    option,
    output,
    parse_option_replies,
    request,
)

from difs.nbd import constants as c
from difs.nbd.connection import CLOSED, DEFAULT_RECV_BUFFER, EXPECT_REQUEST, HANDSHAKE_BUFFER
from difs.nbd.events import ExportChosen, HandshakeTimedOut


def test_no_timer_without_timeouts():
    conn = new_connection()
    assert conn.get_timer() is None
    conn.handle_timer(1e9)
    assert conn.next_event() is None and conn.state != CLOSED


def test_a_silent_client_times_out_at_the_handshake_deadline():
    conn = new_connection(handshake_timeout=10.0, now=100.0)
    assert conn.get_timer() == 110.0
    conn.handle_timer(109.9)
    assert conn.next_event() is None
    conn.handle_timer(110.0)
    [event] = [conn.next_event()]
    assert isinstance(event, HandshakeTimedOut) and "handshake timeout" in event.reason
    assert conn.state == CLOSED and conn.get_timer() is None and conn.next_event() is None


def test_progress_moves_the_idle_deadline_but_not_the_handshake_deadline():
    conn = new_connection(handshake_timeout=10.0, handshake_idle=3.0, now=0.0)
    assert conn.get_timer() == 3.0
    assert feed(conn, client_flags()) == []
    conn.handle_timer(2.0)  # the adapter reports the time after input: progress at 2.0
    assert conn.get_timer() == 5.0
    assert feed(conn, option(c.OPT_LIST)) == []
    conn.handle_timer(4.5)
    assert conn.get_timer() == 7.5
    conn.handle_timer(7.5)  # no step since 4.5
    event = conn.next_event()
    assert isinstance(event, HandshakeTimedOut) and "no handshake progress for 3 s" in event.reason


def test_a_trickling_client_is_closed_by_the_handshake_deadline():
    conn = new_connection(handshake_timeout=10.0, handshake_idle=3.0, now=0.0)
    now = 0.0
    for _ in range(4):  # one option every 2.5 s: never idle, never done
        now += 2.5
        feed(conn, option(c.OPT_LIST) if conn.state != "EXPECT_CLIENT_FLAGS" else client_flags())
        conn.handle_timer(now)
    assert isinstance(conn.next_event(), HandshakeTimedOut)


def test_no_timer_in_transmission():
    conn = new_connection(handshake_timeout=10.0, handshake_idle=3.0, now=0.0)
    events = feed(conn, client_flags() + option(c.OPT_GO, go_payload("vm1")))
    assert isinstance(events[-1], ExportChosen) and conn.state == EXPECT_REQUEST
    assert conn.get_timer() is None
    conn.handle_timer(1000.0)
    assert conn.next_event() is None and conn.state == EXPECT_REQUEST


def test_handshake_buffer_is_small_and_the_transmission_buffer_comes_with_go():
    conn = new_connection()
    assert len(conn._buf) == HANDSHAKE_BUFFER
    feed(conn, client_flags())
    assert len(conn._buf) == HANDSHAKE_BUFFER
    feed(conn, option(c.OPT_GO, go_payload("vm1")))
    assert len(conn._buf) == DEFAULT_RECV_BUFFER


def test_an_option_longer_than_the_handshake_buffer_still_fits():
    conn = new_connection()
    data = client_flags() + option(99, bytes(20_000)) + option(c.OPT_GO, go_payload("vm1"))
    events = []
    for i in range(0, len(data), 1000):  # as a socket delivers it, processed as it comes
        events += feed(conn, data[i : i + 1000])
    assert [type(e) for e in events] == [ExportChosen]
    replies = parse_option_replies(output(conn))
    assert replies[0].type == c.REP_ERR_UNSUP


def test_bytes_pipelined_after_go_survive_the_buffer_swap():
    conn = new_connection()
    data = client_flags() + option(c.OPT_GO, go_payload("vm1")) + request(c.CMD_FLUSH, handle=7)
    events = feed(conn, data)
    assert isinstance(events[0], ExportChosen)
    assert events[1].command == c.CMD_FLUSH and events[1].handle == 7
