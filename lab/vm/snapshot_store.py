"""Where ready snapshots live and whether one may be used: the key it was saved for (image,
QEMU, machine, shape, accelerator), its files and their checks, finding and removing it.

A snapshot is a directory under the cache's snapshots/ holding disk.qcow2 (the lab's overlay
at save time), state.zst (QEMU's migration stream) and manifest.json (written last, with each
file's size and SHA-256); lab.vm.snapshot saves and restores them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from lab import console
from lab.config import Settings
from lab.errors import LabError
from lab.image.build import Image
from lab.ssh import SshTarget
from lab.vm.accel import Accel

FORMAT = 1
QEMU = "qemu-system-x86_64"
STATE = "state.zst"
DISK = "disk.qcow2"
MANIFEST = "manifest.json"
SERIAL = "serial.log"  # the console of the boot the snapshot was taken from
MARKER = "snapshot"  # in a lab's directory: the snapshot its overlay sits on


class LabVm(Protocol):
    """What the QEMU backend offers this module (kept small so the backend can change)."""

    settings: Settings
    directory: Path
    overlay: Path
    qmp_socket: Path
    qemu_log: Path

    def argv(self, image: Image, accel: Accel, port: int) -> list[str]: ...

    def _target(self, port: int) -> SshTarget: ...


# -- key -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """Everything the saved memory depends on; a snapshot is used only when all match."""

    release: str
    image: str  # image directory, build time and kernel build ID
    qemu: str
    machine: str
    cpus: int
    memory: int
    accel: str
    argv: str  # digest of the QEMU command line with the lab's own paths and port removed

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def shape(self) -> tuple[str, int, int, str]:
        return (self.release, self.cpus, self.memory, self.accel)


@functools.cache
def qemu_identity() -> tuple[str, str]:
    """QEMU's version line and the machine type its default alias resolves to."""
    try:
        version = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                                 check=True).stdout.splitlines()[0]
        machines = subprocess.run([QEMU, "-machine", "help"], capture_output=True, text=True,
                                  check=True).stdout
    except (OSError, subprocess.CalledProcessError, IndexError) as exc:
        raise LabError(f"Could not ask {QEMU} for its version ({exc}).") from None
    return version, machine_default(machines)


def machine_default(listing: str) -> str:
    """From `qemu -machine help`: the concrete type behind the (default) alias."""
    for line in listing.splitlines():
        if "(default)" in line:
            alias = re.search(r"\(alias of (\S+?)\)", line)
            return alias.group(1) if alias else line.split()[0]
    return "unknown"


def normalized_argv(argv: list[str], lab: LabVm, port: int) -> str:
    text = "\0".join(argv).replace(str(lab.directory), "LAB")
    text = text.replace(f"127.0.0.1:{port}-", "127.0.0.1:PORT-")
    return hashlib.sha256(text.replace(lab.settings.name, "NAME").encode()).hexdigest()


def key_for(lab: LabVm, image: Image, accel: Accel) -> Key:
    version, machine = qemu_identity()
    port = 10022  # any value: removed again by normalized_argv
    return Key(release=image.release,
               image=f"{image.directory.name} {image.manifest.get('built_at', '')} "
                     f"{image.build_id}",
               qemu=version, machine=machine, cpus=lab.settings.cpus,
               memory=lab.settings.memory, accel=accel.name,
               argv=normalized_argv(lab.argv(image, accel, port), lab, port))


def snapshots_dir(settings: Settings) -> Path:
    return settings.home / "snapshots"


def directory_for(settings: Settings, key: Key) -> Path:
    return snapshots_dir(settings) / f"{key.release}-{key.digest()[:16]}"


# -- manifest and validation ---------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def problem_with(directory: Path, key: Key, *, check_sums: bool = True) -> str:
    """Why this snapshot directory cannot be used for key; empty when it can."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return "it has no manifest"
    except (OSError, ValueError) as exc:
        return f"its manifest is unreadable ({exc})"
    if manifest.get("format") != FORMAT:
        return "it was made by another version of fentry-lab"
    if manifest.get("key") != asdict(key):
        old = manifest.get("key") or {}
        changed = [k for k, v in asdict(key).items() if old.get(k) != v]
        return f"it was made for another {', '.join(changed) or 'setup'}"
    for name in (DISK, STATE):
        expected = manifest.get("files", {}).get(name, {})
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"its {name} is missing"
        if size != expected.get("size"):
            return f"its {name} is truncated or changed ({size} bytes, expected " \
                   f"{expected.get('size')})"
        if check_sums and not _verified_before(path) and \
                sha256_of(path) != expected.get("sha256"):
            return f"its {name} is corrupt (SHA-256 mismatch)"
    if check_sums:
        for name in (DISK, STATE):
            _mark_verified(directory / name)
    return ""


def _stamp(path: Path) -> str:
    info = path.stat()
    return f"{info.st_size} {info.st_mtime_ns} {info.st_ino}"


def _verified_before(path: Path) -> bool:
    """Skips re-hashing (0.25 s) a file unchanged since its last full check; damage that
    keeps size and mtime is still caught when zstd or QEMU reject the stream on restore."""
    try:
        return (path.parent / f".verified-{path.name}").read_text() == _stamp(path)
    except OSError:
        return False


def _mark_verified(path: Path) -> None:
    with contextlib.suppress(OSError):
        (path.parent / f".verified-{path.name}").write_text(_stamp(path))


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def find(lab: LabVm, key: Key) -> Path | None:
    """The valid snapshot for key; stale or broken ones of the same shape are removed."""
    root = snapshots_dir(lab.settings)
    wanted = directory_for(lab.settings, key)
    if not root.is_dir():
        return None
    for candidate in sorted(root.iterdir()):
        if candidate.name.startswith(".") or candidate == wanted:
            continue
        with contextlib.suppress(OSError, ValueError, TypeError):
            old = Key(**json.loads((candidate / MANIFEST).read_text())["key"])
            if old.shape() == key.shape():
                console.say(f"snapshot {candidate.name} no longer matches "
                            f"({problem_with(candidate, key, check_sums=False)}): removing it; "
                            "a new one is made after this cold boot")
                remove(candidate)
    if not wanted.is_dir():
        return None
    problem = problem_with(wanted, key)
    if problem:
        console.warn(f"snapshot {wanted.name} is unusable: {problem}. Removed it; booting "
                     "cold and making a new one")
        remove(wanted)
        return None
    return wanted


def boot_id_of(directory: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads((directory / MANIFEST).read_text())["boot_id"])
    return ""
