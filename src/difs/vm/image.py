"""The guest image, built locally from Debian packages and cached by the hash of its inputs.

* kernel: ``/boot/vmlinuz-*-cloud-amd64`` (``linux-image-cloud-amd64``);
* initrd: one small cpio (newc, uncompressed) holding ``/difs/busybox`` (``busybox-static``),
  the guest's ``/init`` and its workloads (``guest/`` beside this module), and the modules
  the guest needs for its disk — ``virtio_pci`` and ``virtio_blk`` with what they depend on,
  resolved from ``modules.dep`` — taken from the same kernel package's
  ``/lib/modules/RELEASE``.  Debian's own initrd for that kernel carries the same modules,
  but under TCG on a loaded 2-core machine the guest spent ~10 s unpacking its 14 MB
  (measured: "Freeing initrd memory" at 17.5 s against 7 s); the overlay alone is ~2.5 MB.

An image lives in ``<data dir>/images/<key>/`` (``vmlinuz``, ``initrd.img``), where ``key`` is
a hash of the kernel and of the initrd's files: a new kernel, busybox or changed workloads
make a new image, an unchanged one is reused.  Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from difs.vm.errors import ImageError

BOOT = Path("/boot")
BUSYBOX = Path("/bin/busybox")
#: bump when the image's layout changes (not its inputs: those are hashed)
FORMAT = 1
MODULES = Path("/lib/modules")
#: the guest's disk driver and its transport; their dependencies come from modules.dep
GUEST_MODULES = ("virtio_pci", "virtio_blk")
#: the overlay's scripts: (path in the guest, mode, guest/ resource)
SCRIPTS = (("init", 0o755, "init"), ("difs/workloads.sh", 0o644, "workloads.sh"))


@dataclass(frozen=True)
class Inputs:
    kernel: Path
    modules: tuple[Path, ...]  # in load order
    busybox: Path

    @property
    def release(self) -> str:
        return self.kernel.name.removeprefix("vmlinuz-")


@dataclass(frozen=True)
class Image:
    key: str
    kernel: Path
    initrd: Path
    release: str


def module_order(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """The module files (paths relative to the release dir) to load for ``wanted``, each
    after what it depends on (``modules.dep`` lists a module's dependencies)."""
    deps: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        if ":" in line:
            module, _, needs = line.partition(":")
            deps[module.strip()] = needs.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(module: str) -> None:
        for dep in reversed(deps.get(module, ())):
            visit(dep)
        if module not in order:
            order.append(module)

    for name in wanted:
        if name not in by_name:
            raise ImageError(f"module {name} is not in modules.dep")
        visit(by_name[name])
    return order


def _version_key(path: Path) -> tuple:
    return tuple(int(n) if n.isdigit() else n for n in re.split(r"[.-]", path.name))


def find_inputs(boot: Path = BOOT, modules: Path = MODULES, busybox: Path = BUSYBOX) -> Inputs:
    """The newest cloud kernel with its modules, the guest's modules, and a static busybox;
    ImageError naming the Debian package to install when one is missing."""
    kernels = sorted(boot.glob("vmlinuz-*cloud-amd64"), key=_version_key)
    usable = [k for k in kernels
              if (modules / k.name.removeprefix("vmlinuz-") / "modules.dep").is_file()]
    if not usable:
        raise ImageError(f"no cloud kernel with its modules in {boot} and {modules}: install "
                         "linux-image-cloud-amd64 (./scripts/setup.sh does)")
    if not busybox.is_file():
        raise ImageError(f"no {busybox}: install busybox-static (./scripts/setup.sh does)")
    kernel = usable[-1]
    release = modules / kernel.name.removeprefix("vmlinuz-")
    order = module_order((release / "modules.dep").read_text(), GUEST_MODULES)
    return Inputs(kernel, tuple(release / m for m in order), busybox)


# -- newc cpio -------------------------------------------------------------------------

_NEWC = "070701" + "%08X" * 13


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0,
               rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One newc entry (owner root, mtime 0: the archive depends on its contents only)."""
    encoded = name.encode() + b"\0"
    header = (_NEWC % (ino, mode, 0, 0, 1 if mode & 0o170000 != 0o040000 else 2, 0, len(data),
                       0, 0, *rdev, len(encoded), 0)).encode()
    return header + encoded + _pad4(len(header) + len(encoded)) + data + _pad4(len(data))


def cpio_archive(files: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of regular files (mode without type bits), with their directories and
    ``/dev/console`` (the kernel opens it for /init's output)."""
    dirs = sorted({str(p) for name, _, _ in files for p in Path(name).parents if str(p) != "."}
                  | {"dev"})
    out = [cpio_entry(d, 0o040755, ino=i + 1) for i, d in enumerate(dirs)]
    out.append(cpio_entry("dev/console", 0o020600, ino=len(dirs) + len(files) + 1, rdev=(5, 1)))
    out += [cpio_entry(name, 0o100000 | mode, data, ino=len(dirs) + i + 1)
            for i, (name, mode, data) in enumerate(files)]
    out.append(cpio_entry("TRAILER!!!", 0))
    return b"".join(out)


# -- the image -------------------------------------------------------------------------


def overlay_files(inputs: Inputs) -> list[tuple[str, int, bytes]]:
    """The initrd's files: scripts, busybox, the modules (numbered: /init loads them in order)."""
    guest = resources.files("difs.vm") / "guest"
    files = [(name, mode, (guest / res).read_bytes()) for name, mode, res in SCRIPTS]
    files.append(("difs/busybox", 0o755, inputs.busybox.read_bytes()))
    files += [(f"difs/modules/{i:02d}-{m.name}", 0o644, m.read_bytes())
              for i, m in enumerate(inputs.modules)]
    return files


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def image_key(inputs: Inputs, initrd: bytes) -> str:
    h = hashlib.sha256(f"difs-vm-image {FORMAT}\n".encode())
    for part in (_digest(inputs.kernel), hashlib.sha256(initrd).hexdigest()):
        h.update(part.encode())
    return h.hexdigest()[:16]


def build(data_dir: Path, inputs: Inputs | None = None) -> tuple[Image, bool]:
    """The image for ``inputs`` (found in /boot by default) and whether it was built now
    (False: found in the cache)."""
    inputs = inputs or find_inputs()
    initrd = cpio_archive(overlay_files(inputs))
    key = image_key(inputs, initrd)
    where = data_dir / "images" / key
    image = Image(key, where / "vmlinuz", where / "initrd.img", inputs.release)
    if image.kernel.is_file() and image.initrd.is_file():
        return image, False
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=where.parent))
    try:
        shutil.copyfile(inputs.kernel, tmp / "vmlinuz")
        (tmp / "initrd.img").write_bytes(initrd)
        os.replace(tmp, where)  # atomic: a concurrent build of the same key wins or loses whole
    except OSError as exc:
        if not (image.kernel.is_file() and image.initrd.is_file()):
            raise ImageError(f"cannot build the guest image in {where}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return image, True
