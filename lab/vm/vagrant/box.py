"""Cached image -> Vagrant box for the libvirt provider.

A box is a plain (uncompressed) tar of the image's qcow2 disk as `box.img`, a
`metadata.json` and a small Vagrantfile, registered with `vagrant box add` from a one-entry
catalog so that it has a real version. Its name carries the release and the image's disk
hash (`fentry-lab-trixie-<sha256[:12]>`), so a rebuilt image is never confused with an old
box. The image has no bootloader: its kernel and initrd go into libvirt's storage pool as
volumes (libvirt's qemu runs as its own user and cannot read the cache under a home
directory), and the Vagrantfile boots them directly.

vagrant-libvirt copies a box into the pool as a volume on first use and never deletes it;
removing a box here deletes those volumes too (`virsh vol-delete`).
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab import console
from lab.config import Settings
from lab.errors import LabError
from lab.host import run_checked, run_streamed
from lab.image.build import Image, build_image, find_image
from lab.vm.vagrant.libvirt import (
    POOL,
    check_tools,
    delete_volume,
    ensure_daemons,
    ensure_pool,
    files_in_use,
    list_volumes,
    upload_volume,
    vagrant_home,
)

BOX_PREFIX = "fentry-lab-"
BOX_VERSION = "1"
PROVIDER = "libvirt"
GIB = 1024**3

# Inside the box: what any Vagrantfile using it needs; the checkout's Vagrantfile adds the
# direct kernel boot, the driver, the network and the settings.
BOX_VAGRANTFILE = """\
# fentry-lab box: meant for the Vagrantfile at the top of a fentry-lab checkout, which boots
# this disk with the image's kernel (the image has no bootloader).
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.insert_key = false
  config.vm.guest = :debian
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
"""


def image_hash(image: Image) -> str:
    artefacts = image.manifest.get("artefacts")
    assert isinstance(artefacts, dict)
    return str(artefacts["disk.qcow2"]["sha256"])[:12]


def box_name(image: Image) -> str:
    return f"{BOX_PREFIX}{image.release}-{image_hash(image)}"


@dataclass(frozen=True)
class Box:
    """A fentry-lab box and the libvirt volumes that belong to it."""

    name: str
    version: str = BOX_VERSION

    @property
    def release(self) -> str:
        return self.name[len(BOX_PREFIX):].rsplit("-", 1)[0]

    @property
    def directory(self) -> Path:
        """Where `vagrant box add` unpacked it."""
        return (vagrant_home() / "boxes" / self.name.replace("/", "-VAGRANTSLASH-")
                / self.version / PROVIDER)

    @property
    def added(self) -> bool:
        return (self.directory / "metadata.json").is_file()

    @property
    def box_volume(self) -> str:
        """The name vagrant-libvirt gives the box's disk in the pool (HandleBoxImage)."""
        return f"{self.name}_vagrant_box_image_{self.version}_box.img"

    @property
    def kernel_volume(self) -> str:
        return f"{self.name}-vmlinuz"

    @property
    def initrd_volume(self) -> str:
        return f"{self.name}-initrd.img"

    @property
    def volumes(self) -> tuple[str, str, str]:
        return (self.box_volume, self.kernel_volume, self.initrd_volume)


def box_metadata(virtual_size_bytes: int) -> dict[str, object]:
    """metadata.json of a libvirt box (format v1: one qcow2 disk, size in whole GiB)."""
    return {"provider": PROVIDER, "format": "qcow2",
            "virtual_size": max(1, math.ceil(virtual_size_bytes / GIB))}


def box_catalog(name: str, box_file: Path, version: str = BOX_VERSION) -> dict[str, object]:
    """A one-box catalog: `vagrant box add` of it gives the box a version (a bare box file
    gets version 0 and a volume name that changes with the file's mtime)."""
    return {
        "name": name,
        "description": "fentry-lab: Debian guest for eBPF fentry/fexit probes",
        "versions": [{"version": version,
                      "providers": [{"name": PROVIDER, "url": box_file.resolve().as_uri()}]}],
    }


def virtual_size(disk: Path) -> int:
    info = json.loads(run_checked(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                  what="qemu-img info"))
    return int(info["virtual-size"])


def write_box(image: Image, out: Path) -> Path:
    """The box file: an uncompressed tar (gzip would take 50 times longer for little gain:
    the box is unpacked on this same host)."""
    metadata = json.dumps(box_metadata(virtual_size(image.disk)), indent=2).encode() + b"\n"
    box = out / f"{box_name(image)}.box"
    with tarfile.open(box, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("metadata.json", metadata),
                           ("Vagrantfile", BOX_VAGRANTFILE.encode())):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            member.mtime = int(time.time())
            tar.addfile(member, io.BytesIO(data))
        tar.add(image.disk, arcname="box.img")
    return box


def list_boxes() -> list[Box]:
    """fentry-lab boxes Vagrant knows (from its box directory, without starting Vagrant)."""
    root = vagrant_home() / "boxes"
    if not root.is_dir():
        return []
    found = []
    for box_dir in sorted(root.glob(f"{BOX_PREFIX}*")):
        for version_dir in sorted(p for p in box_dir.iterdir() if p.is_dir()):
            box = Box(box_dir.name.replace("-VAGRANTSLASH-", "/"), version_dir.name)
            if box.added:
                found.append(box)
    return found


def add_box(settings: Settings, image: Image, *, force: bool = False) -> Box:
    """Make the box for an image and `vagrant box add` it; a no-op when already added."""
    box = Box(box_name(image))
    if box.added and not force:
        console.say(f"box {box.name} is already added ({box.directory})")
        return box
    if box.added:
        remove_box(box)
    work = settings.home / "vagrant"
    work.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(work).free < 2 * image.disk.stat().st_size + GIB:
        raise LabError(f"Not enough free space in {work} for the box (about "
                       f"{2 * image.disk.stat().st_size / GIB:.1f} GiB while it is added).")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".box-", dir=work))
    try:
        console.say(f"packing {image.directory.name} into box {box.name} (plain tar)")
        box_file = write_box(image, tmp)
        catalog = tmp / "catalog.json"
        catalog.write_text(json.dumps(box_catalog(box.name, box_file), indent=2) + "\n")
        console.say(f"vagrant box add {box.name} (version {box.version}, provider {PROVIDER})")
        run_streamed(["vagrant", "box", "add", "--force", "--provider", PROVIDER,
                      "--box-version", box.version, str(catalog)],
                     what="vagrant box add", on_line=_vagrant_line, env=vagrant_env())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not box.added:
        raise LabError(f"`vagrant box add` finished but {box.directory} has no metadata.json.")
    console.say(f"box {box.name} added in {time.monotonic() - started:.1f} s")
    for old in stale_boxes(image):
        console.say(f"removing box {old.name}, made from an older {image.release} image")
        remove_box(old)
    return box


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_vagrant_line(line: str) -> str:
    """One line of Vagrant's output as a person would read it: no colours, no progress."""
    text = ANSI.sub("", line).split("\r")[-1].strip()
    return "" if "Progress:" in text else text


def _vagrant_line(line: str) -> None:
    text = clean_vagrant_line(line)
    if text:
        console.say(f"  {text}")


def vagrant_env() -> dict[str, str]:
    """No phoning home for version checks (the lab's hosts have no internet)."""
    return {"VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1"}


def ensure_boot_volumes(box: Box, image: Image) -> tuple[Path, Path]:
    """Kernel and initrd as volumes of libvirt's pool, where its qemu can read them."""
    ensure_pool()
    volumes = list_volumes()
    paths = []
    for name, source in ((box.kernel_volume, image.kernel), (box.initrd_volume, image.initrd)):
        if name not in volumes:
            console.say(f"uploading {source.name} into libvirt pool {POOL!r} as {name}")
            volumes[name] = upload_volume(name, source)
        paths.append(volumes[name])
    return paths[0], paths[1]


def remove_volumes(box: Box) -> list[str]:
    """Delete the box's volumes that no libvirt domain uses; return those kept in use."""
    volumes = list_volumes()
    mine = {name: path for name, path in volumes.items() if name in box.volumes}
    if not mine:
        return []
    used = files_in_use()
    kept = []
    for name, path in mine.items():
        if path in used:
            kept.append(name)
        else:
            delete_volume(name)
    return kept


def remove_box(box: Box) -> None:
    """`vagrant box remove` and the pool volumes Vagrant leaves behind."""
    if box.added:
        console.say(f"vagrant box remove {box.name} (version {box.version})")
        run_checked(["vagrant", "box", "remove", "--force", "--provider", PROVIDER,
                     "--box-version", box.version, box.name],
                    what="vagrant box remove", env=vagrant_env())
    kept = remove_volumes(box)
    if kept:
        console.warn(f"kept volumes still used by a libvirt domain: {', '.join(kept)}")


def stale_boxes(image: Image) -> list[Box]:
    """Boxes of the same release made from other images (older builds)."""
    current = box_name(image)
    return [b for b in list_boxes() if b.release == image.release and b.name != current]


def make_box(settings: Settings, *, force: bool = False) -> Box:
    """`invoke image.box`: the image (built if missing), then its box, added to Vagrant."""
    check_tools()
    image = find_image(settings) or build_image(settings)
    return add_box(settings, image, force=force)


def remove_boxes(settings: Settings) -> list[Box]:
    """`invoke image.box --remove`: every fentry-lab box of the release, and its volumes."""
    check_tools()
    ensure_daemons()  # the volumes are deleted through libvirt
    removed = [box for box in list_boxes() if box.release == settings.release]
    for box in removed:
        remove_box(box)
    if not removed:
        console.say(f"no fentry-lab boxes of {settings.release} to remove")
    return removed
