"""A small blocking NBD client, for diagnostics and tests (not for the data path).

It speaks fixed newstyle, NBD_OPT_GO with block sizes, structured replies (optional) and the
transmission commands, and it can also send raw bytes, which is what tests of a server's
behaviour on bad input need. Real applications use QEMU, libnbd, fio...
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from difs.nbd import constants as c
from difs.nbd import wire


class NbdClientError(Exception):
    """The server refused an option (``reply_type``) or a request (``error``)."""

    def __init__(self, message: str, *, reply_type: int = 0, error: int = 0) -> None:
        super().__init__(message)
        self.reply_type = reply_type
        self.error = error


@dataclass
class ExportInfo:
    name: str
    size: int = 0
    flags: int = 0
    block_sizes: tuple[int, int, int] | None = None
    description: str | None = None


@dataclass
class Reply:
    handle: int
    error: int = 0
    data: bytes = b""
    message: str = ""
    structured: bool = False
    chunks: list[tuple[int, int, bytes]] = field(default_factory=list)  # (flags, type, payload)


class NbdClient:
    """Blocking client over one connected socket (see :meth:`connect_tcp`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.structured = False
        self.handshake_flags = 0
        self._next_handle = 1
        self._pending: dict[int, tuple[int, int]] = {}  # handle -> (command, length)

    # -- connecting -------------------------------------------------------------------------
    @classmethod
    def connect_tcp(cls, host: str, port: int, *, timeout: float = 10.0) -> NbdClient:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    @classmethod
    def connect_unix(cls, path: str, *, timeout: float = 10.0) -> NbdClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- raw I/O ----------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("server closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def is_closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF/reset) within ``timeout``;
        any bytes it sends before that are discarded."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return True

    # -- handshake --------------------------------------------------------------------------
    def handshake(
        self, *, client_flags: int = c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES
    ) -> None:
        magic, opt_magic, flags = wire.GREETING_STRUCT.unpack(self.recv_exact(18))
        if magic != c.NBDMAGIC or opt_magic != c.IHAVEOPT:
            raise NbdClientError("not a newstyle NBD server")
        self.handshake_flags = flags
        self.send_raw(wire.U32.pack(client_flags))

    def send_option(self, option: int, payload: bytes = b"") -> None:
        self.send_raw(wire.OPTION_HEADER_STRUCT.pack(c.IHAVEOPT, option, len(payload)) + payload)

    def recv_option_reply(self) -> tuple[int, int, bytes]:
        magic, option, reply_type, length = wire.OPTION_REPLY_STRUCT.unpack(self.recv_exact(20))
        if magic != c.OPTION_REPLY_MAGIC:
            raise NbdClientError(f"bad option reply magic {magic:#x}")
        return option, reply_type, self.recv_exact(length)

    def option(self, option: int, payload: bytes = b"") -> list[tuple[int, bytes]]:
        """Send an option; return its replies up to the final ACK; raise on an error reply."""
        self.send_option(option, payload)
        replies = []
        while True:
            _opt, reply_type, data = self.recv_option_reply()
            if reply_type & (1 << 31):
                name = c.REPLY_TYPE_NAMES.get(reply_type, hex(reply_type))
                message = data.decode(errors="replace")
                raise NbdClientError(f"{name}: {message}", reply_type=reply_type)
            if reply_type == c.REP_ACK:
                return replies
            replies.append((reply_type, data))

    def negotiate_structured_replies(self) -> None:
        self.option(c.OPT_STRUCTURED_REPLY)
        self.structured = True

    def list_exports(self) -> list[str]:
        names = []
        for _type, data in self.option(c.OPT_LIST):
            (n,) = wire.U32.unpack_from(data)
            names.append(data[4 : 4 + n].decode())
        return names

    def info(
        self, name: str, *, go: bool = False, requests: tuple[int, ...] = (c.INFO_BLOCK_SIZE,)
    ) -> ExportInfo:
        raw = name.encode()
        payload = wire.U32.pack(len(raw)) + raw + wire.U16.pack(len(requests))
        payload += b"".join(wire.U16.pack(r) for r in requests)
        info = ExportInfo(name)
        for _type, data in self.option(c.OPT_GO if go else c.OPT_INFO, payload):
            (kind,) = wire.U16.unpack_from(data)
            if kind == c.INFO_EXPORT:
                _k, info.size, info.flags = wire.INFO_EXPORT_STRUCT.unpack(data)
            elif kind == c.INFO_BLOCK_SIZE:
                info.block_sizes = wire.INFO_BLOCK_SIZE_STRUCT.unpack(data)[1:]
            elif kind == c.INFO_DESCRIPTION:
                info.description = data[2:].decode()
        return info

    def go(self, name: str, **kwargs) -> ExportInfo:
        return self.info(name, go=True, **kwargs)

    @classmethod
    def open_tcp(cls, host: str, port: int, name: str, *, structured: bool = True) -> NbdClient:
        """Connect, negotiate and enter transmission on export ``name``."""
        client = cls.connect_tcp(host, port)
        client.handshake()
        if structured:
            client.negotiate_structured_replies()
        client.export = client.go(name)
        return client

    # -- transmission -----------------------------------------------------------------------
    def send_request(
        self, command: int, offset: int = 0, length: int = 0, *, flags: int = 0,
        data: bytes = b"", handle: int | None = None,
    ) -> int:
        if handle is None:
            handle = self._next_handle
            self._next_handle += 1
        self._pending[handle] = (command, length)
        self.send_raw(
            wire.REQUEST_STRUCT.pack(c.REQUEST_MAGIC, flags, command, handle, offset, length) + data
        )
        return handle

    def recv_reply(self) -> Reply:
        (magic,) = struct.unpack(">I", self.recv_exact(4))
        if magic == c.SIMPLE_REPLY_MAGIC:
            error, handle = struct.unpack(">IQ", self.recv_exact(12))
            command, length = self._pending.pop(handle, (None, 0))
            data = self.recv_exact(length) if command == c.CMD_READ and error == 0 else b""
            return Reply(handle, error, data)
        if magic != c.STRUCTURED_REPLY_MAGIC:
            raise NbdClientError(f"bad reply magic {magic:#x}")
        reply = None
        while True:
            if reply is not None:
                (magic,) = struct.unpack(">I", self.recv_exact(4))
                if magic != c.STRUCTURED_REPLY_MAGIC:
                    raise NbdClientError("interleaved replies are not supported by this client")
            flags, rtype, handle, length = struct.unpack(">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length)
            if reply is None:
                reply = Reply(handle, structured=True)
            reply.chunks.append((flags, rtype, payload))
            if rtype == c.REPLY_TYPE_OFFSET_DATA:
                reply.data += payload[8:]
            elif rtype & (1 << 15):
                reply.error, mlen = wire.ERROR_PAYLOAD_STRUCT.unpack_from(payload)
                reply.message = payload[6 : 6 + mlen].decode(errors="replace")
            if flags & c.REPLY_FLAG_DONE:
                self._pending.pop(handle, None)
                return reply

    def _call(self, command: int, offset: int = 0, length: int = 0, **kwargs) -> Reply:
        handle = self.send_request(command, offset, length, **kwargs)
        reply = self.recv_reply()
        if reply.handle != handle:
            raise NbdClientError(f"reply for handle {reply.handle}, expected {handle}")
        if reply.error:
            raise NbdClientError(f"error {reply.error}: {reply.message}", error=reply.error)
        return reply

    def read(self, offset: int, length: int, *, flags: int = 0) -> bytes:
        return self._call(c.CMD_READ, offset, length, flags=flags).data

    def write(self, offset: int, data: bytes, *, flags: int = 0) -> None:
        self._call(c.CMD_WRITE, offset, len(data), flags=flags, data=data)

    def flush(self) -> None:
        self._call(c.CMD_FLUSH)

    def trim(self, offset: int, length: int) -> None:
        self._call(c.CMD_TRIM, offset, length)

    def write_zeroes(self, offset: int, length: int, *, flags: int = 0) -> None:
        self._call(c.CMD_WRITE_ZEROES, offset, length, flags=flags)

    def disconnect(self) -> None:
        self.send_request(c.CMD_DISC)
