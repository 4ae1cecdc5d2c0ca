"""A TCP proxy for iSCSI tests: sees each connection's ISID, can cut, refuse or stall channels.

The host's channel number is the low 16 bits of the ISID of the first Login
Request, so the proxy knows which path each connection is without any help.

* ``cut(channel)`` resets the channel's connections (both ends see the loss);
* ``refused`` holds channels whose new connections are closed at once;
* ``stall(channel)`` makes the channel a black hole, like a network partition:
  its connections stop forwarding in both directions *without closing*, and new
  connections of that channel are accepted but never reach the controller.
  ``resume(channel)`` heals the partition for *new* connections; the stalled ones
  stay hung, as TCP connections do after a real partition, until an end gives up
  on them (the controller does when the host's reconnect reinstates the session).

``upstream`` may be changed at any time: later connections go to the new address.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from support import free_port

_POLL = 0.05


class _Link:
    """One proxied connection."""

    def __init__(self, channel: int, client: socket.socket,
                 server: socket.socket | None) -> None:
        self.channel = channel
        self.client = client
        self.server = server
        self.frozen = False
        self.dead = False
        #: the first 48 bytes the client sent (already forwarded when the pipes start)
        self.first = b""

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.server) if s is not None]


class IscsiProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self.links: list[_Link] = []
        self.refused: set[int] = set()
        self.stalled: set[int] = set()
        self.accepted: list[int] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> list[_Link]:
        """Live (not cut) connections."""
        with self._lock:
            return [link for link in self.links if not link.dead]

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
            if channel in self.stalled:  # partitioned: the login never arrives
                link = _Link(channel, client, None)
                link.frozen = True
                self.links.append(link)
                return
        try:
            server = socket.create_connection(self.upstream)
            server.sendall(first)
        except OSError:
            client.close()
            return
        link = _Link(channel, client, server)
        link.first = first
        with self._lock:
            self.links.append(link)
        threading.Thread(target=self._pipe, args=(link, server, client), daemon=True).start()
        self._pipe(link, client, server)

    def _pipe(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not link.dead:
                if link.frozen:  # neither read (the sender's window fills) nor close
                    time.sleep(_POLL)
                    continue
                ready, _, _ = select.select([src], [], [], _POLL)
                if not ready or link.frozen:
                    continue
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # ValueError: the other direction closed the socket
            pass
        if link.frozen and not link.dead:
            return
        link.dead = True
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stall(self, channel: int) -> int:
        """Black-hole ``channel``; return how many live connections were frozen."""
        with self._lock:
            self.stalled.add(channel)
            victims = [link for link in self.links if link.channel == channel and not link.dead]
            for link in victims:
                link.frozen = True
        return len(victims)

    def resume(self, channel: int) -> None:
        """New connections of ``channel`` flow again (stalled ones stay hung)."""
        with self._lock:
            self.stalled.discard(channel)

    def cut(self, channel: int) -> int:
        """Reset every live connection of ``channel``; return how many were cut."""
        with self._lock:
            victims = [link for link in self.links if link.channel == channel and not link.dead]
            for link in victims:
                link.dead = True
        for link in victims:
            for s in link.sockets():
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
        return len(victims)

    def close(self) -> None:
        self._stop = True
        self._listener.close()
        with self._lock:
            channels = {link.channel for link in self.links}
        for channel in channels:
            self.cut(channel)
