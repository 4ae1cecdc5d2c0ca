"""NBD handshake and option haggling, fed whole, one byte at a time and with trailing bytes."""

from __future__ import annotations

import struct

import pytest
from nbd_testlib import (
    FEED_MODES,
    client_flags,
    feed,
    go_payload,
    meta_payload,
    new_connection,
    option,
    output,
    parse_option_replies,
)

from difs.nbd import constants as c
from difs.nbd.backend import MemoryBackend
from difs.nbd.connection import CLOSED, EXPECT_OPTION, EXPECT_REQUEST
from difs.nbd.events import ClientDisconnect, ConnectionClosed, ExportChosen, ProtocolViolation


@pytest.fixture(params=FEED_MODES)
def mode(request):
    return request.param


def test_greeting_is_fixed_newstyle_with_no_zeroes():
    conn = new_connection()  # asserts the exact greeting bytes
    assert conn.state == "EXPECT_CLIENT_FLAGS"


def test_unknown_client_flags_end_the_connection(mode):
    conn = new_connection()
    events = feed(conn, client_flags(0x4 | c.FLAG_C_FIXED_NEWSTYLE), mode)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert "client flags" in events[0].reason
    assert conn.state == CLOSED
    assert conn.next_event() is None


def test_go_enters_transmission_with_info_replies(mode):
    conn = new_connection()
    infos = (c.INFO_NAME, c.INFO_DESCRIPTION, c.INFO_BLOCK_SIZE)
    events = feed(conn, client_flags() + option(c.OPT_GO, go_payload("vm1", infos)), mode)
    assert len(events) == 1 and isinstance(events[0], ExportChosen)
    assert events[0].name == "vm1" and events[0].structured_replies is False
    assert conn.state == EXPECT_REQUEST
    replies = parse_option_replies(output(conn))
    assert [r.type for r in replies] == [c.REP_INFO] * 4 + [c.REP_ACK]
    assert all(r.option == c.OPT_GO for r in replies)
    info = {struct.unpack_from(">H", r.data)[0]: r.data for r in replies[:-1]}
    _t, size, tflags = struct.unpack(">HQH", info[c.INFO_EXPORT])
    assert size == 1 << 20
    expected = (
        c.TFLAG_HAS_FLAGS | c.TFLAG_SEND_FLUSH | c.TFLAG_SEND_FUA | c.TFLAG_SEND_TRIM
        | c.TFLAG_SEND_WRITE_ZEROES | c.TFLAG_SEND_FAST_ZERO | c.TFLAG_CAN_MULTI_CONN
    )
    assert tflags == expected
    assert struct.unpack(">HIII", info[c.INFO_BLOCK_SIZE])[1:] == (512, 4096, 32 << 20)
    assert info[c.INFO_NAME][2:] == b"vm1"
    assert info[c.INFO_DESCRIPTION][2:] == b"test disk"


def test_info_does_not_leave_haggling_and_go_follows(mode):
    conn = new_connection()
    data = client_flags() + option(c.OPT_INFO, go_payload("vm1"))
    data += option(c.OPT_GO, go_payload("vm1"))
    events = feed(conn, data, mode)
    assert [type(e) for e in events] == [ExportChosen]
    replies = parse_option_replies(output(conn))
    assert [r.option for r in replies] == [c.OPT_INFO] * 3 + [c.OPT_GO] * 3


def test_go_unknown_export_is_an_error_reply_and_haggling_continues(mode):
    conn = new_connection()
    events = feed(conn, client_flags() + option(c.OPT_GO, go_payload("nope")), mode)
    assert events == []
    assert conn.state == EXPECT_OPTION
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ERR_UNKNOWN and b"nope" in reply.data
    if mode != "trailing":  # (trailing mode left a partial message pending)
        events = feed(conn, option(c.OPT_GO, go_payload("vm1")), "whole")
        assert isinstance(events[0], ExportChosen)


def test_structured_replies_then_go_advertises_df(mode):
    conn = new_connection()
    data = client_flags() + option(c.OPT_STRUCTURED_REPLY) + option(c.OPT_GO, go_payload("vm1"))
    [event] = feed(conn, data, mode)
    assert event.structured_replies is True and conn.structured_replies
    replies = parse_option_replies(output(conn))
    assert replies[0].option == c.OPT_STRUCTURED_REPLY and replies[0].type == c.REP_ACK
    _t, _size, tflags = struct.unpack(">HQH", replies[1].data)
    assert tflags & c.TFLAG_SEND_DF


def test_structured_reply_with_data_is_invalid():
    conn = new_connection()
    feed(conn, client_flags() + option(c.OPT_STRUCTURED_REPLY, b"x"))
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ERR_INVALID
    assert conn.structured_replies is False


@pytest.mark.parametrize("no_zeroes", [True, False])
def test_export_name_replies_size_and_flags(mode, no_zeroes):
    conn = new_connection()
    flags = c.FLAG_C_FIXED_NEWSTYLE | (c.FLAG_C_NO_ZEROES if no_zeroes else 0)
    [event] = feed(conn, client_flags(flags) + option(c.OPT_EXPORT_NAME, b"vm1"), mode)
    assert isinstance(event, ExportChosen) and event.name == "vm1"
    out = output(conn)
    assert len(out) == (10 if no_zeroes else 134)
    size, tflags = struct.unpack_from(">QH", out)
    assert size == 1 << 20 and tflags & c.TFLAG_HAS_FLAGS
    assert not tflags & c.TFLAG_SEND_DF  # no structured replies were negotiated
    assert out[10:] == bytes(len(out) - 10)


def test_export_name_unknown_terminates(mode):
    conn = new_connection()
    events = feed(conn, client_flags() + option(c.OPT_EXPORT_NAME, b"nope"), mode)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert "nope" in events[0].reason and conn.state == CLOSED


def test_list_names_every_export(mode):
    exports = {"a": MemoryBackend(4096), "b": MemoryBackend(4096, description="bee")}
    conn = new_connection(exports)
    assert feed(conn, client_flags() + option(c.OPT_LIST), mode) == []
    replies = parse_option_replies(output(conn))
    assert [r.type for r in replies] == [c.REP_SERVER, c.REP_SERVER, c.REP_ACK]
    assert replies[0].data == b"\x00\x00\x00\x01a"
    assert replies[1].data == b"\x00\x00\x00\x01bbee"


def test_list_with_data_is_invalid():
    conn = new_connection()
    feed(conn, client_flags() + option(c.OPT_LIST, b"junk"))
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ERR_INVALID


def test_abort_acks_and_disconnects(mode):
    conn = new_connection()
    events = feed(conn, client_flags() + option(c.OPT_ABORT), mode)
    assert len(events) == 1 and isinstance(events[0], ClientDisconnect)
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ACK and reply.option == c.OPT_ABORT
    assert conn.state == CLOSED


@pytest.mark.parametrize("opt", [c.OPT_STARTTLS, c.OPT_EXTENDED_HEADERS, c.OPT_PEEK_EXPORT, 999])
def test_unknown_or_unsupported_options_get_err_unsup(mode, opt):
    conn = new_connection()
    assert feed(conn, client_flags() + option(opt, b"abc"), mode) == []
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ERR_UNSUP and reply.option == opt
    assert conn.state == EXPECT_OPTION


def test_bad_option_magic_is_a_violation(mode):
    conn = new_connection()
    bad = struct.pack(">QII", 0x1122334455667788, c.OPT_GO, 0)
    events = feed(conn, client_flags() + bad, mode)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert "magic" in events[0].reason


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no name length
        struct.pack(">I", 10) + b"vm1",  # name runs past the data
        go_payload("vm1")[:-1],  # no info count
        go_payload("vm1", (1,))[:-1],  # count does not match
        struct.pack(">I", 2) + b"\xff\xfe" + struct.pack(">H", 0),  # not UTF-8
    ],
)
def test_malformed_go_is_invalid_and_haggling_continues(payload):
    conn = new_connection()
    assert feed(conn, client_flags() + option(c.OPT_GO, payload)) == []
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ERR_INVALID
    assert conn.state == EXPECT_OPTION


def test_oversized_option_is_skipped_and_refused(mode):
    conn = new_connection()
    big = option(c.OPT_GO, bytes(c.MAX_OPTION_LENGTH + 100))
    data = client_flags() + big + option(c.OPT_GO, go_payload("vm1"))
    if mode == "bytewise":
        mode = "whole"  # 64 KiB one byte at a time is slow and adds nothing here
    events = feed(conn, data, mode)
    assert [type(e) for e in events] == [ExportChosen]
    replies = parse_option_replies(output(conn))
    assert replies[0].type == c.REP_ERR_TOO_BIG


def test_meta_context_needs_structured_replies():
    conn = new_connection()
    feed(conn, client_flags() + option(c.OPT_SET_META_CONTEXT, meta_payload("vm1", [])))
    [reply] = parse_option_replies(output(conn))
    assert reply.type == c.REP_ERR_INVALID


def test_list_and_set_meta_context_base_allocation(mode):
    conn = new_connection()
    data = (
        client_flags()
        + option(c.OPT_STRUCTURED_REPLY)
        + option(c.OPT_LIST_META_CONTEXT, meta_payload("vm1", []))
        + option(c.OPT_SET_META_CONTEXT, meta_payload("vm1", ["base:allocation", "x-foo:bar"]))
        + option(c.OPT_GO, go_payload("vm1"))
    )
    [event] = feed(conn, data, mode)
    assert event.meta_contexts == {1: "base:allocation"}
    replies = parse_option_replies(output(conn))
    listed = [r for r in replies if r.option == c.OPT_LIST_META_CONTEXT]
    assert [r.type for r in listed] == [c.REP_META_CONTEXT, c.REP_ACK]
    assert listed[0].data == b"\x00\x00\x00\x00base:allocation"
    selected = [r for r in replies if r.option == c.OPT_SET_META_CONTEXT]
    assert [r.type for r in selected] == [c.REP_META_CONTEXT, c.REP_ACK]
    assert selected[0].data == b"\x00\x00\x00\x01base:allocation"


def test_meta_context_selection_is_for_its_export_only():
    exports = {"a": MemoryBackend(4096), "b": MemoryBackend(4096)}
    conn = new_connection(exports)
    data = (
        client_flags()
        + option(c.OPT_STRUCTURED_REPLY)
        + option(c.OPT_SET_META_CONTEXT, meta_payload("a", ["base:allocation"]))
        + option(c.OPT_GO, go_payload("b"))
    )
    [event] = feed(conn, data)
    assert event.name == "b" and event.meta_contexts == {}


def test_meta_context_unknown_export():
    conn = new_connection()
    feed(conn, client_flags() + option(c.OPT_STRUCTURED_REPLY)
         + option(c.OPT_LIST_META_CONTEXT, meta_payload("zzz", [])))
    replies = parse_option_replies(output(conn))
    assert replies[-1].type == c.REP_ERR_UNKNOWN


def test_read_only_export_flags():
    conn = new_connection({"ro": MemoryBackend(4096, read_only=True)})
    feed(conn, client_flags() + option(c.OPT_GO, go_payload("ro")))
    replies = parse_option_replies(output(conn))
    _t, _size, tflags = struct.unpack(">HQH", replies[0].data)
    assert tflags & c.TFLAG_READ_ONLY
    assert not tflags & (c.TFLAG_SEND_TRIM | c.TFLAG_SEND_WRITE_ZEROES)


def test_eof_during_negotiation_reports_connection_closed():
    conn = new_connection()
    conn.receive_data(client_flags() + option(c.OPT_GO, go_payload("vm1"))[:7])
    assert conn.next_event() is None
    conn.receive_data(b"")
    event = conn.next_event()
    assert isinstance(event, ConnectionClosed) and event.during == EXPECT_OPTION
    assert conn.next_event() is None


def test_exports_added_after_connect_are_visible():
    exports: dict = {}
    conn = new_connection(exports)
    exports["late"] = MemoryBackend(4096)
    [event] = feed(conn, client_flags() + option(c.OPT_GO, go_payload("late")))
    assert event.name == "late"
