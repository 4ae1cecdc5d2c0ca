"""Bad NBD input ends (at most) that client's connection; real clients on other exports and on
the same export keep working, and the server stays up."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from difs.nbd import constants as c
from difs.nbd.backend import MemoryBackend
from difs.nbd.client import NbdClient, NbdClientError
from difs.nbd.testing import BackgroundNbdServer

pytestmark = pytest.mark.interop

MiB = 1 << 20


@pytest.fixture
def srv():
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        pytest.skip("qemu-img/qemu-io not installed")
    exports = {"victim": MemoryBackend(16 * MiB), "neighbour": MemoryBackend(16 * MiB)}
    with BackgroundNbdServer(exports) as server:
        yield server


def start_convert(srv, tmp_path, export: str) -> tuple[subprocess.Popen, str]:
    """A real client streaming 16 MiB into ``export`` while the bad client misbehaves."""
    src = tmp_path / f"{export}.img"
    src.write_bytes(os.urandom(16 * MiB))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    proc = subprocess.Popen(
        ["qemu-img", "convert", "-n", "-t", "none", "-f", "raw", "-O", "raw", str(src),
         srv.uri(export)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, digest


def assert_others_unaffected(srv, proc, digest, export):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    backend = srv.server.exports[export]
    assert hashlib.sha256(bytes(backend.buffer)).hexdigest() == digest
    # and a fresh real client still works on both exports
    for name in ("victim", "neighbour"):
        io = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x5c 0 64k", "-c", "read -P 0x5c 0 64k",
             srv.uri(name)],
            capture_output=True, text=True, timeout=30,
        )
        assert io.returncode == 0 and "verification failed" not in io.stdout, io.stdout + io.stderr


def test_garbage_after_negotiation_ends_only_that_connection(srv, tmp_path):
    proc, digest = start_convert(srv, tmp_path, "neighbour")
    bad = NbdClient.open_tcp(srv.host, srv.port, "victim")
    bad.send_raw(os.urandom(4096))
    assert bad.is_closed_by_server()
    bad.close()
    assert_others_unaffected(srv, proc, digest, "neighbour")
    assert srv.server.stats["victim"].protocol_violations == 1


def test_garbage_instead_of_handshake(srv, tmp_path):
    proc, digest = start_convert(srv, tmp_path, "victim")
    with NbdClient.connect_tcp(srv.host, srv.port) as bad:
        bad.recv_exact(18)
        bad.send_raw(b"\x00\x00\x00\x03" + b"NOTMAGIC" * 8)
        assert bad.is_closed_by_server()
    assert_others_unaffected(srv, proc, digest, "victim")


def test_oversized_write_gets_einval_and_the_connection_ends(srv, tmp_path):
    proc, digest = start_convert(srv, tmp_path, "neighbour")
    bad = NbdClient.open_tcp(srv.host, srv.port, "victim")
    # claims a 1 GiB payload: the server must not try to buffer it
    bad.send_request(c.CMD_WRITE, 0, 1 << 30, handle=0xBAD)
    bad.send_raw(b"\x00" * 65536)
    reply = bad.recv_reply()
    assert (reply.handle, reply.error) == (0xBAD, c.EINVAL) and "exceeds" in reply.message
    assert bad.is_closed_by_server()
    bad.close()
    assert_others_unaffected(srv, proc, digest, "neighbour")


def test_oversized_read_gets_einval(srv, tmp_path):
    proc, digest = start_convert(srv, tmp_path, "neighbour")
    with NbdClient.open_tcp(srv.host, srv.port, "victim") as bad:
        with pytest.raises(NbdClientError) as err:
            bad.read(0, 64 * MiB)
        assert err.value.error == c.EINVAL
    assert_others_unaffected(srv, proc, digest, "neighbour")


def test_out_of_range_offsets_get_proper_errors(srv, tmp_path):
    proc, digest = start_convert(srv, tmp_path, "victim")
    with NbdClient.open_tcp(srv.host, srv.port, "victim") as bad:
        with pytest.raises(NbdClientError) as err:
            bad.read(16 * MiB, 4096)
        assert err.value.error == c.EINVAL
        with pytest.raises(NbdClientError) as err:
            bad.write((1 << 63), b"x" * 512)
        assert err.value.error == c.ENOSPC
        with pytest.raises(NbdClientError) as err:
            bad.trim(16 * MiB - 512, 4096)
        assert err.value.error == c.EINVAL
        bad.disconnect()
        assert bad.is_closed_by_server()
    assert_others_unaffected(srv, proc, digest, "victim")


def test_unknown_export_with_qemu_gets_a_clear_error(srv):
    proc = subprocess.run(
        ["qemu-img", "info", srv.uri("no-such-app")], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert "no-such-app" in proc.stderr
