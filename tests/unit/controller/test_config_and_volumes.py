"""Controller configuration, sizes/portals and on-disk volumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from difs.controller.config import ConfigError, load_config
from difs.controller.volumes import VolumeDirectory, VolumeError
from difs.util.units import format_size, parse_portal, parse_size


@pytest.mark.parametrize("text,size", [("4096", 4096), ("64M", 64 << 20), ("1G", 1 << 30),
                                       ("1GiB", 1 << 30), ("2k", 2048), (" 3 T ", 3 << 40)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1", "10X", "1 G B"])
def test_parse_size_rejects_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        parse_size(text)


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:3260", ("127.0.0.1", 3260)), ("127.0.0.2", ("127.0.0.2", 3260)),
    ("[::1]:3261", ("::1", 3261)), ("localhost:1", ("localhost", 1)),
])
def test_parse_portal(text: str, expected: tuple[str, int]) -> None:
    assert parse_portal(text) == expected


@pytest.mark.parametrize("text", ["::1:3260", "[::1", "host:0", "host:70000", ":3260", "h:x"])
def test_parse_portal_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid portal"):
        parse_portal(text)


def test_volume_created_then_kept(tmp_path: Path) -> None:
    vols = VolumeDirectory(tmp_path)
    meta = vols.ensure("v1", 1 << 20)
    assert vols.data_path("v1").stat().st_size == 1 << 20
    assert vols.data_path("v1").stat().st_blocks == 0  # sparse
    vols.data_path("v1").write_bytes(b"x" * 512 + bytes((1 << 20) - 512))
    again = VolumeDirectory(tmp_path).ensure("v1", None)
    assert again == meta
    assert vols.data_path("v1").read_bytes()[:512] == b"x" * 512
    with pytest.raises(VolumeError, match="exists with size 1M, not 2M"):
        vols.ensure("v1", 2 << 20)


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "a" * 64, "sp ace", "sl/ash"])
def test_volume_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(VolumeError, match="invalid volume name"):
        VolumeDirectory(tmp_path).ensure(name, 1 << 20)


def test_volume_size_must_be_whole_blocks(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="multiple of the 512-byte block size"):
        VolumeDirectory(tmp_path).ensure("odd", 1000)
    with pytest.raises(VolumeError, match="give its size"):
        VolumeDirectory(tmp_path).ensure("missing", None)


def test_corrupt_metadata_is_a_clear_error(tmp_path: Path) -> None:
    vols = VolumeDirectory(tmp_path)
    vols.ensure("v", 1 << 20)
    vols.meta_path("v").write_text("{not json")
    with pytest.raises(VolumeError, match="unreadable volume metadata"):
        vols.load("v")


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("""
[controller]
name = "ctl1"
portals = ["127.0.0.1:3300"]
[[volume]]
name = "db"
size = "1G"
chap = { user = "u", secret = "s" }
require_header_digest = true
""")
    cfg = load_config(path)
    assert cfg.name == "ctl1" and cfg.portals == ["127.0.0.1:3300"]
    (vol,) = cfg.volumes
    assert vol.size == 1 << 30 and vol.chap.user == "u" and vol.require_header_digest
    assert cfg.target_name("db") == "iqn.2026-11.io.difs:ctl1.db"


@pytest.mark.parametrize("text,message", [
    ("[controller\n", "not valid TOML"),
    ("[controler]\n", "unknown section"),
    ("[controller]\nportals = []\n", "portals"),
    ("[[volume]]\nname='a'\nsize='1Q'\n", "volume"),
    ("[[volume]]\nname='a'\ncolour='red'\n", "colour"),
])
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
