"""A TCP proxy for iSCSI tests: sees each connection's ISID, can cut or refuse channels.

The host's channel number is the low 16 bits of the ISID of the first Login
Request, so the proxy knows which path each connection is without any help.
"""

from __future__ import annotations

import socket
import threading

from support import free_port


class IscsiProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self.connections: list[tuple[int, socket.socket, socket.socket]] = []
        self.refused: set[int] = set()
        self.accepted: list[int] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = b""
        try:
            while len(first) < 48:
                chunk = client.recv(48 - len(first))
                if not chunk:
                    client.close()
                    return
                first += chunk
        except OSError:
            client.close()
            return
        channel = int.from_bytes(first[8:14], "big") & 0xFFFF
        with self._lock:
            if channel in self.refused:
                client.close()
                return
            self.accepted.append(channel)
        server = socket.create_connection(self.upstream)
        server.sendall(first)
        with self._lock:
            self.connections.append((channel, client, server))
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        self._pipe(client, server)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(262144):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, channel: int) -> int:
        """Reset every live connection of ``channel``; return how many were cut."""
        with self._lock:
            victims = [c for c in self.connections if c[0] == channel]
            self.connections = [c for c in self.connections if c[0] != channel]
        for _, client, server in victims:
            for s in (client, server):
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
        return len(victims)

    def close(self) -> None:
        self._stop = True
        self._listener.close()
        for channel in {c[0] for c in self.connections}:
            self.cut(channel)
