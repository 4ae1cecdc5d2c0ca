"""The guest image: module load order from modules.dep, the newc archive (read back by GNU
cpio), the cache key, and clear errors when a Debian package is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from difs.vm import image
from difs.vm.errors import ImageError

DEP = """kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
"""


def test_modules_load_after_what_they_depend_on() -> None:
    order = [Path(m).stem for m in image.module_order(DEP, ("virtio_pci", "virtio_blk"))]
    assert order == ["virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                     "virtio_pci", "virtio_blk"]
    with pytest.raises(ImageError, match="virtio_scsi is not in modules.dep"):
        image.module_order(DEP, ("virtio_scsi",))


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed")
def test_the_archive_is_newc_that_cpio_reads_back(tmp_path: Path) -> None:
    files = [("init", 0o755, b"#!/difs/busybox sh\necho hi\n"), ("difs/modules/00-a.ko", 0o644, b"x" * 5)]
    archive = image.cpio_archive(files)
    assert len(archive) % 4 == 0
    listing = subprocess.run(["cpio", "-itv"], input=archive, capture_output=True, check=True).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names == ["dev", "difs", "difs/modules", "dev/console", "init", "difs/modules/00-a.ko"]
    assert listing.splitlines()[3].startswith("crw-------")  # /dev/console, 5,1
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_bytes() == files[0][2]
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "difs/modules/00-a.ko").read_bytes() == b"xxxxx"


def _fake_boot(root: Path, release: str = "6.1.0-9-cloud-amd64") -> tuple[Path, Path, Path]:
    boot, mods = root / "boot", root / "modules"
    boot.mkdir(exist_ok=True)
    (boot / f"vmlinuz-{release}").write_bytes(b"kernel " + release.encode())
    rel = mods / release
    for m in ("virtio", "virtio_ring", "virtio_pci", "virtio_pci_legacy_dev", "virtio_pci_modern_dev"):
        (rel / "kernel/drivers/virtio").mkdir(parents=True, exist_ok=True)
        (rel / f"kernel/drivers/virtio/{m}.ko").write_bytes(m.encode())
    (rel / "kernel/drivers/block").mkdir(parents=True, exist_ok=True)
    (rel / "kernel/drivers/block/virtio_blk.ko").write_bytes(b"blk")
    (rel / "modules.dep").write_text(DEP)
    busybox = root / "busybox"
    busybox.write_bytes(b"busybox")
    return boot, mods, busybox


def test_the_image_is_cached_by_its_inputs(tmp_path: Path) -> None:
    boot, mods, busybox = _fake_boot(tmp_path)
    inputs = image.find_inputs(boot, mods, busybox)
    assert inputs.release == "6.1.0-9-cloud-amd64" and inputs.modules[-1].name == "virtio_blk.ko"
    first, built = image.build(tmp_path / "data", inputs)
    assert built and first.kernel.read_bytes() == b"kernel 6.1.0-9-cloud-amd64"
    again, built = image.build(tmp_path / "data", inputs)
    assert (again, built) == (first, False)
    busybox.write_bytes(b"busybox 2")  # a new busybox is a new image
    other, built = image.build(tmp_path / "data", image.find_inputs(boot, mods, busybox))
    assert built and other.key != first.key
    assert (tmp_path / "data" / "images").stat().st_mode & 0o777 == 0o700


def test_the_newest_kernel_with_modules_is_chosen(tmp_path: Path) -> None:
    boot, mods, busybox = _fake_boot(tmp_path, "6.1.0-9-cloud-amd64")
    _fake_boot(tmp_path, "6.1.0-10-cloud-amd64")
    (boot / "vmlinuz-6.1.0-11-cloud-amd64").write_bytes(b"no modules")
    assert image.find_inputs(boot, mods, busybox).release == "6.1.0-10-cloud-amd64"


def test_a_missing_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="install linux-image-cloud-amd64"):
        image.find_inputs(tmp_path, tmp_path, tmp_path / "busybox")
    boot, mods, _ = _fake_boot(tmp_path)
    with pytest.raises(ImageError, match="install busybox-static"):
        image.find_inputs(boot, mods, tmp_path / "nothing")
