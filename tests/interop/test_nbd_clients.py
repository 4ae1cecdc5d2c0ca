"""Real NBD clients (QEMU, libnbd, fio) against the difs NBD server on loopback.

The server runs in-process on a background event loop (``BackgroundNbdServer``) so the tests
can look at the exported bytes directly, on a free TCP port and on a Unix socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from difs.nbd.backend import MemoryBackend
from difs.nbd.testing import BackgroundNbdServer

pytestmark = pytest.mark.interop

MiB = 1 << 20
IMAGE_SIZE = 8 * MiB


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing client tools: {', '.join(missing)}")


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(scope="module")
def srv():
    with BackgroundNbdServer() as server:
        yield server


@pytest.fixture
def export(srv, request):
    """A fresh 8 MiB in-memory export named after the test."""
    name = request.node.name.replace("[", "-").replace("]", "")
    backend = MemoryBackend(IMAGE_SIZE)
    srv.call_soon(srv.server.add_export, name, backend)
    yield name, backend
    srv.call_soon(srv.server.remove_export, name)


@pytest.fixture
def random_image(tmp_path):
    path = tmp_path / "src.img"
    path.write_bytes(os.urandom(IMAGE_SIZE))
    return path


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_qemu_img_convert_round_trip(srv, export, random_image, tmp_path, transport):
    need("qemu-img")
    name, backend = export
    uri = srv.uri(name) if transport == "tcp" else srv.unix_uri(name)
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(random_image), uri)
    assert sha256(bytes(backend.buffer)) == file_sha256(random_image)
    out = tmp_path / "back.img"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out))
    assert file_sha256(out) == file_sha256(random_image)


def test_qemu_img_info(srv, export):
    need("qemu-img")
    name, _backend = export
    info = json.loads(run("qemu-img", "info", "--output=json", srv.uri(name)).stdout)
    assert info["virtual-size"] == IMAGE_SIZE
    assert info["format"] == "raw"


def test_nbdinfo_shows_the_export(srv, export):
    need("nbdinfo")
    name, _backend = export
    info = json.loads(run("nbdinfo", "--json", srv.uri(name)).stdout)
    [exp] = info["exports"]
    assert exp["export-name"] == name
    assert exp["export-size"] == IMAGE_SIZE
    assert (exp["block_size_minimum"], exp["block_size_preferred"], exp["block_size_maximum"]) == (
        512, 4096, 32 * MiB,
    )
    assert exp["can_flush"] and exp["can_fua"] and exp["can_trim"] and exp["can_zero"]
    assert exp["is_read_only"] is False
    assert info["structured"] is True
    listing = run("nbdinfo", "--list", "--json", f"nbd://{srv.host}:{srv.port}").stdout
    assert name in [e["export-name"] for e in json.loads(listing)["exports"]]


def test_nbdcopy_round_trip(srv, export, random_image, tmp_path):
    need("nbdcopy")
    name, backend = export
    run("nbdcopy", str(random_image), srv.uri(name))
    assert sha256(bytes(backend.buffer)) == file_sha256(random_image)
    out = tmp_path / "back.img"
    run("nbdcopy", srv.unix_uri(name), str(out))
    assert file_sha256(out) == file_sha256(random_image)


def test_qemu_io_pattern_write_and_read(srv, export):
    need("qemu-io")
    name, backend = export
    proc = run(
        "qemu-io", "-f", "raw",
        "-c", "write -P 0xab 0 1M",
        "-c", "read -P 0xab 0 1M",
        "-c", "write -z 1M 1M",
        "-c", "read -P 0 1M 1M",
        "-c", "flush",
        srv.uri(name),
    )
    assert "Pattern verification failed" not in proc.stdout + proc.stderr
    assert proc.stdout.count("read 1048576/1048576 bytes") == 2
    assert bytes(backend.buffer[:MiB]) == b"\xab" * MiB
    assert bytes(backend.buffer[MiB : 2 * MiB]) == bytes(MiB)


def test_fio_nbd_engine_randwrite_with_verify(srv, export):
    need("fio")
    engines = subprocess.run(["fio", "--enghelp"], capture_output=True, text=True).stdout
    if "nbd" not in engines.split():
        pytest.skip("this fio was built without the nbd engine")
    name, _backend = export
    proc = run(
        "fio", "--name=difs-nbd", "--ioengine=nbd", f"--uri={srv.uri(name)}",
        "--rw=randwrite", "--bs=4k", f"--size={IMAGE_SIZE}", "--iodepth=16",
        "--verify=crc32c", "--do_verify=1", "--verify_state_save=0", "--output-format=json",
        timeout=120,
    )
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    [job] = report["jobs"]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] == IMAGE_SIZE
    assert job["read"]["io_bytes"] == IMAGE_SIZE  # the verify pass read everything back
    assert "verify" not in proc.stderr.lower()
