"""Option haggling of the fixed newstyle handshake (server side, sans-I/O).

:class:`OptionHaggler` answers one client option at a time. Each handler gets the option's
payload and queues its replies into ``out``; it returns ``None`` to keep haggling or the event
that ends it (:class:`ExportChosen`, :class:`ClientDisconnect`, :class:`ProtocolViolation`).
The connection (``connection.py``) owns framing and the phase; this module owns what the
options mean.

Supported: NBD_OPT_EXPORT_NAME, ABORT, LIST, INFO, GO (NBD_INFO_EXPORT, NAME, DESCRIPTION,
BLOCK_SIZE), STRUCTURED_REPLY, LIST_META_CONTEXT / SET_META_CONTEXT (``base:allocation``).
Everything else gets NBD_REP_ERR_UNSUP.

An export is any object with the attributes of :class:`difs.nbd.backend.NbdBackend`:
``size``, ``block_size``, ``preferred_block_size``, ``read_only``, ``can_flush``, ``can_fua``,
``can_trim``, ``can_zero``, ``can_fast_zero``, ``can_multi_conn``, ``description``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from difs.nbd import constants as c
from difs.nbd import wire
from difs.nbd.events import ClientDisconnect, Event, ExportChosen, ProtocolViolation

#: Metadata contexts this server knows, by the id it hands out in NBD_REP_META_CONTEXT.
META_CONTEXTS = {1: c.META_BASE_ALLOCATION}
_META_CONTEXT_IDS = {name: cid for cid, name in META_CONTEXTS.items()}


class OptionError(Exception):
    """Inside a handler: answer the option with an NBD_REP_ERR_* and keep haggling."""

    def __init__(self, reply_type: int, message: str) -> None:
        super().__init__(message)
        self.reply_type = reply_type
        self.message = message


def transmission_flags(export: Any, *, structured_replies: bool) -> int:
    """The 16-bit transmission flags advertised for ``export``."""
    flags = c.TFLAG_HAS_FLAGS
    read_only = bool(export.read_only)
    if read_only:
        flags |= c.TFLAG_READ_ONLY
    if export.can_flush:
        flags |= c.TFLAG_SEND_FLUSH
    if export.can_fua:
        flags |= c.TFLAG_SEND_FUA
    if export.can_trim and not read_only:
        flags |= c.TFLAG_SEND_TRIM
    if export.can_zero and not read_only:
        flags |= c.TFLAG_SEND_WRITE_ZEROES | c.TFLAG_SEND_FAST_ZERO
    if structured_replies:
        flags |= c.TFLAG_SEND_DF
    if export.can_multi_conn:
        flags |= c.TFLAG_CAN_MULTI_CONN
    return flags


def block_sizes(export: Any, max_payload: int) -> tuple[int, int, int]:
    """(minimum, preferred, maximum) block sizes advertised for ``export``."""
    minimum = int(export.block_size)
    preferred = max(minimum, int(getattr(export, "preferred_block_size", minimum)))
    return minimum, preferred, max(preferred, max_payload)


def _pull_string(payload: memoryview, pos: int, length: int, what: str) -> str:
    if length > c.MAX_STRING:
        raise OptionError(c.REP_ERR_TOO_BIG, f"{what} longer than {c.MAX_STRING} bytes")
    if pos + length > len(payload):
        raise OptionError(c.REP_ERR_INVALID, f"{what} runs past the option data")
    try:
        return bytes(payload[pos : pos + length]).decode("utf-8")
    except UnicodeDecodeError:
        raise OptionError(c.REP_ERR_INVALID, f"{what} is not valid UTF-8") from None


def _pull_u32(payload: memoryview, pos: int, what: str) -> int:
    if pos + 4 > len(payload):
        raise OptionError(c.REP_ERR_INVALID, f"option data too short for {what}")
    return wire.U32.unpack_from(payload, pos)[0]


class OptionHaggler:
    """State and answers of the option haggling phase for one connection."""

    def __init__(
        self,
        exports: Mapping[str, Any],
        out: list,
        *,
        max_payload: int,
        no_zeroes: bool = False,
    ) -> None:
        self.exports = exports
        self.out = out
        self.max_payload = max_payload
        self.no_zeroes = no_zeroes
        self.structured_replies = False
        # (export name, {context id: name}) selected by NBD_OPT_SET_META_CONTEXT
        self.meta_selection: tuple[str, dict[int, str]] | None = None
        self._handlers: dict[int, Callable[[int, memoryview], Event | None]] = {
            c.OPT_EXPORT_NAME: self._opt_export_name,
            c.OPT_ABORT: self._opt_abort,
            c.OPT_LIST: self._opt_list,
            c.OPT_INFO: self._opt_info_or_go,
            c.OPT_GO: self._opt_info_or_go,
            c.OPT_STRUCTURED_REPLY: self._opt_structured_reply,
            c.OPT_LIST_META_CONTEXT: self._opt_meta_context,
            c.OPT_SET_META_CONTEXT: self._opt_meta_context,
        }

    # -- entry points ---------------------------------------------------------------------
    def handle(self, option: int, payload: memoryview) -> Event | None:
        handler = self._handlers.get(option)
        if handler is None:
            name = c.OPTION_NAMES.get(option, f"option {option}")
            self.reply(option, c.REP_ERR_UNSUP, f"{name} is not supported by this server".encode())
            return None
        try:
            return handler(option, payload)
        except OptionError as exc:
            self.reply(option, exc.reply_type, exc.message.encode())
            return None

    def refuse_too_big(self, option: int, length: int) -> None:
        """Answer an option whose payload was too long to read (it was skipped)."""
        self.reply(option, c.REP_ERR_TOO_BIG, f"option data of {length} bytes is too big".encode())

    def reply(self, option: int, reply_type: int, payload: bytes = b"") -> None:
        self.out.append(wire.encode_option_reply(option, reply_type, payload))

    # -- handlers -------------------------------------------------------------------------
    def _lookup(self, name: str) -> Any:
        export = self.exports.get(name)
        if export is None:
            raise OptionError(c.REP_ERR_UNKNOWN, f"export {name!r} not found")
        return export

    def _chosen(self, name: str, export: Any) -> ExportChosen:
        contexts: dict[int, str] = {}
        if self.meta_selection is not None and self.meta_selection[0] == name:
            contexts = dict(self.meta_selection[1])
        return ExportChosen(name, export, self.structured_replies, contexts)

    def _opt_export_name(self, option: int, payload: memoryview) -> Event:
        if len(payload) > c.MAX_STRING:
            return ProtocolViolation("NBD_OPT_EXPORT_NAME with an over-long export name")
        try:
            name = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            return ProtocolViolation("NBD_OPT_EXPORT_NAME with a name that is not UTF-8")
        export = self.exports.get(name)
        if export is None:
            # The option cannot carry an error: the spec says terminate the session.
            return ProtocolViolation(f"NBD_OPT_EXPORT_NAME for unknown export {name!r}")
        # Without NBD_OPT_GO the client cannot learn the block size or use structured
        # replies: those were only negotiated if it asked earlier.
        tflags = transmission_flags(export, structured_replies=self.structured_replies)
        self.out.append(wire.encode_export_name_reply(int(export.size), tflags, self.no_zeroes))
        return self._chosen(name, export)

    def _opt_abort(self, option: int, payload: memoryview) -> Event:
        self.reply(option, c.REP_ACK)
        return ClientDisconnect("NBD_OPT_ABORT")

    def _opt_list(self, option: int, payload: memoryview) -> None:
        if len(payload):
            raise OptionError(c.REP_ERR_INVALID, "NBD_OPT_LIST carries no data")
        for name, export in list(self.exports.items()):
            description = getattr(export, "description", "") or ""
            self.reply(option, c.REP_SERVER, wire.encode_rep_server(name, description))
        self.reply(option, c.REP_ACK)

    def _opt_info_or_go(self, option: int, payload: memoryview) -> Event | None:
        name_len = _pull_u32(payload, 0, "the export name length")
        name = _pull_string(payload, 4, name_len, "export name")
        pos = 4 + name_len
        if pos + 2 > len(payload):
            raise OptionError(c.REP_ERR_INVALID, "option data too short for the info request count")
        (count,) = wire.U16.unpack_from(payload, pos)
        pos += 2
        if pos + 2 * count != len(payload):
            raise OptionError(c.REP_ERR_INVALID, "info request count does not match option length")
        requested = {wire.U16.unpack_from(payload, pos + 2 * i)[0] for i in range(count)}
        export = self._lookup(name)

        size = int(export.size)
        tflags = transmission_flags(export, structured_replies=self.structured_replies)
        self.reply(option, c.REP_INFO, wire.encode_info_export(size, tflags))
        # Block sizes are always sent (the spec allows it): clients must honour the minimum.
        self.reply(
            option, c.REP_INFO, wire.encode_info_block_size(*block_sizes(export, self.max_payload))
        )
        if c.INFO_NAME in requested:
            self.reply(option, c.REP_INFO, wire.encode_info_string(c.INFO_NAME, name))
        description = getattr(export, "description", "") or ""
        if c.INFO_DESCRIPTION in requested and description:
            self.reply(
                option, c.REP_INFO, wire.encode_info_string(c.INFO_DESCRIPTION, description)
            )
        self.reply(option, c.REP_ACK)
        if option == c.OPT_GO:
            return self._chosen(name, export)
        return None

    def _opt_structured_reply(self, option: int, payload: memoryview) -> None:
        if len(payload):
            raise OptionError(c.REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY carries no data")
        self.structured_replies = True
        self.reply(option, c.REP_ACK)

    def _opt_meta_context(self, option: int, payload: memoryview) -> None:
        if not self.structured_replies:
            raise OptionError(
                c.REP_ERR_INVALID, "metadata contexts need NBD_OPT_STRUCTURED_REPLY first"
            )
        name_len = _pull_u32(payload, 0, "the export name length")
        name = _pull_string(payload, 4, name_len, "export name")
        pos = 4 + name_len
        count = _pull_u32(payload, pos, "the query count")
        pos += 4
        queries = []
        for _ in range(count):
            qlen = _pull_u32(payload, pos, "a query length")
            queries.append(_pull_string(payload, pos + 4, qlen, "query"))
            pos += 4 + qlen
        if pos != len(payload):
            raise OptionError(c.REP_ERR_INVALID, "trailing bytes after the queries")
        self._lookup(name)

        selected: dict[int, str] = {}
        listing = option == c.OPT_LIST_META_CONTEXT
        if listing and not queries:
            selected = dict(META_CONTEXTS)
        for query in queries:
            if query in _META_CONTEXT_IDS:
                selected[_META_CONTEXT_IDS[query]] = query
            elif listing and query == "base:":
                selected.update(
                    {cid: n for cid, n in META_CONTEXTS.items() if n.startswith("base:")}
                )
        for cid, cname in sorted(selected.items()):
            # LIST replies carry id 0 ("reserved"), SET replies the id used in transmission.
            reply = wire.encode_meta_context(0 if listing else cid, cname)
            self.reply(option, c.REP_META_CONTEXT, reply)
        if not listing:
            self.meta_selection = (name, selected)
        self.reply(option, c.REP_ACK)
