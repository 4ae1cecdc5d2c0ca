"""DSCP per channel: the channel plan names it, the socket carries it (read back), the path
reports what the socket really carries, and the host advertises the classes it marks."""

from __future__ import annotations

import asyncio
import socket

import pytest

from difs.host.connection import _marked_connection
from difs.host.paths import ChannelSpec, parse_channels


def test_channel_plan_with_dscp():
    specs = parse_channels("digests:af41, plain, header:46, plain:0")
    assert [(s.channel, s.label, s.dscp) for s in specs] == [
        (0, "digests", 34), (1, "plain", None), (2, "header", 46), (3, "plain", 0)]
    assert specs[0].header_digest and specs[0].data_digest


@pytest.mark.parametrize("text, message", [
    ("digests:zz", "channel 0 (digests:zz): unknown DSCP class 'zz'"),
    ("plain,plain:64", "channel 1 (plain:64): DSCP 64 is out of range"),
    ("fast:ef", "unknown channel kind 'fast'"),
])
def test_bad_channel_plans_are_named(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_channels(text)


class _Sink(asyncio.Protocol):
    pass


@pytest.mark.parametrize("family, address", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_socket_is_marked_before_it_connects_and_read_back(family, address):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Sink, address, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            transport, _, marked = await _marked_connection(loop, _Sink, address, port, 46)
            sock = transport.get_extra_info("socket")
            level, option = ((socket.IPPROTO_IPV6, socket.IPV6_TCLASS) if family == socket.AF_INET6
                             else (socket.IPPROTO_IP, socket.IP_TOS))
            assert marked == 46 and sock.getsockopt(level, option) == 46 << 2
            transport.close()
        finally:
            server.close()
            await server.wait_closed()

    try:
        socket.socket(family).close()
    except OSError:
        pytest.skip(f"no {family.name} here")
    asyncio.run(main())


def test_a_refused_connection_is_an_oserror():
    async def main():
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(OSError):
            await _marked_connection(asyncio.get_running_loop(), _Sink, "127.0.0.1", port, 10)

    asyncio.run(main())


def test_channel_spec_default_is_unmarked():
    assert ChannelSpec(0).dscp is None


def test_the_host_advertises_the_classes_it_marks_and_each_paths_read_back_dscp():
    from types import SimpleNamespace

    from difs.host.manager_link import HostManagerLink
    from difs.host.paths import Path, PathState
    from difs.policy.fast import NegotiatedServices

    specs = parse_channels("digests:ef,plain:af41,plain")
    paths = []
    for spec, marked in zip(specs, (46, 34, None)):
        path = Path(spec, controller="ctl1", portal="127.0.0.1:3260", target="iqn.2026-11.io.difs:t")
        path.negotiated = NegotiatedServices(header_digest=spec.header_digest, dscp=marked)
        path.state = PathState.UP
        paths.append(path)
    group = SimpleNamespace(paths=paths, controller="ctl1", portal="127.0.0.1:3260", lun_pi={})
    from difs.host.pathgroup import CredentialBook

    config = SimpleNamespace(initiator_name="iqn.2026-11.io.difs:host1", credentials=CredentialBook(),
                             channels=specs)
    host = SimpleNamespace(groups={"g": group}, config=config, apps={})
    link = HostManagerLink(host, client=None, node="host1")  # type: ignore[arg-type]
    ad = link.advertisement()
    assert ad.services.qos.limit is True
    assert ad.services.qos.dscp_classes == [34, 46]
    assert [p.negotiated.dscp for p in ad.paths] == [46, 34, None]
