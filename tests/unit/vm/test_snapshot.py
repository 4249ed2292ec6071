"""Ready snapshots without a VM: key, manifest checks, faults while saving, the boot-ID filter."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.config import Settings
from lab.image.build import Image
from lab.ssh import SshTarget
from lab.vm import snapshot
from lab.vm import snapshot_store as store
from lab.vm.accel import Accel

TCG = Accel("tcg", "test")
LISTING = """Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
"""


@dataclass
class FakeLab:
    settings: Settings
    directory: Path
    overlay: Path = field(init=False)
    qmp_socket: Path = field(init=False)
    qemu_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.overlay = self.directory / "overlay.qcow2"
        self.qmp_socket = self.directory / "qmp.sock"
        self.qemu_log = self.directory / "qemu.log"

    def argv(self, image: Image, accel: Accel, port: int) -> list[str]:
        return ["qemu", "-drive", f"file={self.overlay}", "-smp", str(self.settings.cpus),
                "-netdev", f"user,hostfwd=tcp:127.0.0.1:{port}-:22", "-name", self.settings.name]

    def _target(self, port: int) -> SshTarget:
        raise AssertionError("not used")


@pytest.fixture(autouse=True)
def fixed_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "qemu_identity", lambda: ("QEMU 7.2", "pc-i440fx-7.2"))
    monkeypatch.delenv("FENTRY_LAB_SNAPSHOTS", raising=False)


def make_lab(tmp_path: Path, name: str = "sn-unit", cpus: int = 2) -> FakeLab:
    settings = Settings(home=tmp_path / "home", name=name, cpus=cpus)
    lab = FakeLab(settings, settings.labs_dir / name)
    lab.directory.mkdir(parents=True)
    return lab


def make_image(tmp_path: Path, built_at: str = "2026-12-03") -> Image:
    return Image(tmp_path / "images" / "trixie-abc", {
        "release": "trixie", "built_at": built_at, "build_id": "b1d",
        "boot": {"root_device": "/dev/nvme0n1", "disk_interface": "nvme", "initrd": "no"}})


def write_snapshot(lab: FakeLab, key: store.Key, *, state: bytes = b"S" * 1000,
                   boot_id: str = "") -> Path:
    directory = store.directory_for(lab.settings, key)
    directory.mkdir(parents=True)
    (directory / store.STATE).write_bytes(state)
    (directory / store.DISK).write_bytes(b"D" * 500)
    files = {name: {"size": (directory / name).stat().st_size,
                    "sha256": store.sha256_of(directory / name)}
             for name in (store.DISK, store.STATE)}
    manifest = {"format": store.FORMAT, "key": key.__dict__, "files": files,
                "boot_id": boot_id}
    (directory / store.MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_machine_default_is_the_concrete_type() -> None:
    assert store.machine_default(LISTING) == "pc-i440fx-7.2"
    assert store.machine_default("none\n") == "unknown"


def test_key_ignores_the_labs_own_paths_and_port(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    one = store.key_for(make_lab(tmp_path, "sn-10022-1"), image, TCG)
    two = store.key_for(make_lab(tmp_path, "sn-10022-2"), image, TCG)
    assert one == two
    fwd = "hostfwd=tcp:127.0.0.1:4242-:22"
    assert store.normalized_argv(["a", fwd], make_lab(tmp_path, "sn-x"), 4242) == \
        store.normalized_argv(["a", fwd.replace("4242", "4343")], make_lab(tmp_path, "sn-y"),
                                 4343)
    assert store.normalized_argv(["a", fwd], make_lab(tmp_path, "sn-z"), 4242) != \
        store.normalized_argv(["a", fwd, "-m", "9"], make_lab(tmp_path, "sn-w"), 4242)


def test_key_changes_with_image_qemu_and_shape(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(tmp_path)
    base = store.key_for(lab, make_image(tmp_path), TCG)
    assert store.key_for(lab, make_image(tmp_path, "later"), TCG) != base
    assert store.key_for(lab, make_image(tmp_path), Accel("kvm", "")) != base
    assert store.key_for(make_lab(tmp_path, "sn-4", cpus=4), make_image(tmp_path),
                            TCG).digest() != base.digest()
    monkeypatch.setattr(store, "qemu_identity", lambda: ("QEMU 8.0", "pc-i440fx-8.0"))
    assert store.key_for(lab, make_image(tmp_path), TCG) != base


def test_lab_image_boots_the_migratable_shape(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    image = make_image(tmp_path)
    assert snapshot.lab_image(image).boot["disk_interface"] == "virtio"
    assert image.boot["disk_interface"] == "nvme"  # the image itself is untouched
    assert "vmgenid" in " ".join(snapshot.extra_argv())
    monkeypatch.setenv("FENTRY_LAB_SNAPSHOTS", "off")
    assert snapshot.lab_image(image) is image
    assert snapshot.extra_argv() == [] and snapshot.kernel_args("x") == "x"


def test_a_valid_snapshot_is_found(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    key = store.key_for(lab, make_image(tmp_path), TCG)
    directory = write_snapshot(lab, key)
    assert store.problem_with(directory, key) == ""
    assert store.find(lab, key) == directory


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "state.zst").write_bytes(b"S" * 10), "truncated"),
    (lambda d: (d / "state.zst").write_bytes(b"X" * 1000), "corrupt"),
    (lambda d: (d / "disk.qcow2").unlink(), "missing"),
    (lambda d: (d / "manifest.json").write_text("{nope"), "unreadable"),
    (lambda d: (d / "manifest.json").unlink(), "no manifest"),
])
def test_a_broken_snapshot_is_removed_with_a_notice(tmp_path: Path, capsys: Any,
                                                    damage: Any, expected: str) -> None:
    lab = make_lab(tmp_path)
    key = store.key_for(lab, make_image(tmp_path), TCG)
    directory = write_snapshot(lab, key)
    damage(directory)
    assert expected in store.problem_with(directory, key)
    assert store.find(lab, key) is None
    assert not directory.exists()
    out = capsys.readouterr()
    assert "unusable" in out.out + out.err and "booting cold" in out.out + out.err


def test_a_snapshot_of_an_older_image_or_qemu_is_removed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: Any) -> None:
    lab = make_lab(tmp_path)
    old = write_snapshot(lab, store.key_for(lab, make_image(tmp_path, "old"), TCG))
    other_shape = write_snapshot(
        lab, store.key_for(make_lab(tmp_path, "sn-4", cpus=4), make_image(tmp_path), TCG))
    monkeypatch.setattr(store, "qemu_identity", lambda: ("QEMU 9", "pc-i440fx-9.0"))
    key = store.key_for(lab, make_image(tmp_path), TCG)
    assert store.find(lab, key) is None
    assert not old.exists()
    assert other_shape.exists()  # another VM shape keeps its own snapshot
    out = capsys.readouterr()
    assert "no longer matches" in out.out + out.err
    assert "image" in out.out + out.err and "qemu" in out.out + out.err


class FakeSession:
    def __init__(self, target: object, **_: object) -> None:
        pass

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, command: object, timeout: float = 0) -> Any:
        class Result:
            out = "6b2c3f1e-0000-4000-8000-000000000000\n"
            exit_status = 0
        return Result()


@pytest.mark.parametrize("fault", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left")])
def test_a_failed_save_leaves_no_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: Any, fault: BaseException) -> None:
    lab = make_lab(tmp_path)
    image = make_image(tmp_path)
    monkeypatch.setattr(snapshot, "Session", FakeSession)

    def half_written(lab: FakeLab, temp: Path) -> None:
        (temp / store.STATE).write_bytes(b"half")
        raise fault

    monkeypatch.setattr(snapshot, "_migrate_to", half_written)
    if isinstance(fault, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            snapshot.save(lab, image, TCG, None)  # type: ignore[arg-type]
    else:
        snapshot.save(lab, image, TCG, None)  # type: ignore[arg-type]
        assert "Free space" in capsys.readouterr().err
    root = store.snapshots_dir(lab.settings)
    assert list(root.iterdir()) == []  # neither a snapshot nor a temporary directory


def test_a_completed_save_has_a_manifest_that_validates(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(tmp_path)
    image = make_image(tmp_path)
    monkeypatch.setattr(snapshot, "Session", FakeSession)

    def migrate(lab: FakeLab, temp: Path) -> None:
        (temp / store.STATE).write_bytes(os.urandom(4096))
        (temp / store.DISK).write_bytes(b"disk")

    monkeypatch.setattr(snapshot, "_migrate_to", migrate)
    snapshot.save(lab, image, TCG, None)  # type: ignore[arg-type]
    key = store.key_for(lab, image, TCG)
    found = store.find(lab, key)
    assert found is not None
    assert store.boot_id_of(found).startswith("6b2c3f1e")


def test_choose_keeps_a_powered_off_labs_disk(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    image = make_image(tmp_path)
    write_snapshot(lab, store.key_for(lab, image, TCG))
    lab.overlay.write_bytes(b"own disk")
    assert snapshot.choose(lab, image, TCG) is None
    assert lab.overlay.exists()
    # a disk on a snapshot that was since removed is started afresh
    (lab.directory / store.MARKER).write_text(str(tmp_path / "gone"))
    assert snapshot.choose(lab, image, TCG) is not None
    assert not lab.overlay.exists()


def test_the_filter_swaps_the_boot_id_across_chunk_boundaries(tmp_path: Path) -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    chunk = 1 << 20
    data = bytearray(os.urandom(3 * chunk))
    places = [0, chunk - 7, 2 * chunk - 16, 2 * chunk + 5, len(data) - 16]
    for at in places:
        data[at:at + 16] = old.bytes
    data[100:136] = str(old).encode()
    argv = snapshot.incoming_argv(write_boot_id(tmp_path, old), new)
    pipeline = argv[1].removeprefix("exec:").split(" | ", 1)[1]
    out = subprocess.run(pipeline, shell=True, input=bytes(data), capture_output=True,
                         check=True).stdout
    assert len(out) == len(data)
    assert out.count(old.bytes) == 0 and out.count(str(old).encode()) == 0
    assert out.count(new.bytes) == len(places) and out.count(str(new).encode()) == 1
    assert sys.executable in pipeline


def write_boot_id(tmp_path: Path, boot_id: uuid.UUID) -> Path:
    directory = tmp_path / "snap"
    directory.mkdir()
    (directory / store.MANIFEST).write_text(json.dumps({"boot_id": str(boot_id)}))
    return directory


def test_lab_reset_needs_the_qemu_backend() -> None:
    from lab.errors import LabError
    from lab.vm.vagrant.backend import VagrantBackend

    with pytest.raises(LabError, match="qemu backend"):
        VagrantBackend(Settings(backend="vagrant")).reset()
