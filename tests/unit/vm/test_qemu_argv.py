"""Unit tests for the QEMU command line and the PID check of lab.vm.qemu (no VM is booted)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.image.build import Image
from lab.vm.accel import Accel
from lab.vm.boot import kernel_cmdline
from lab.vm.qemu_process import QEMU, pid_is_lab, qemu_argv

TCG = Accel("tcg", "test")
KVM = Accel("kvm", "test")


def make_image(directory: Path, *, disk_interface: str = "virtio", initrd: str | None = "no",
               root_device: str = "/dev/vda") -> Image:
    boot: dict[str, str] = {"root_device": root_device, "disk_interface": disk_interface}
    if initrd is not None:
        boot["initrd"] = initrd
    manifest: dict[str, object] = {
        "release": "trixie",
        "kernel_release": "6.12.117+deb13-cloud-amd64",
        "build_id": "ab" * 20,
        "boot": boot,
    }
    directory.mkdir(parents=True, exist_ok=True)
    return Image(directory, manifest)


def argv_for(tmp_path: Path, image: Image | None = None, accel: Accel = TCG,
             ssh_port: int = 40022, name: str = "default") -> list[str]:
    lab = tmp_path / "labs" / name
    return qemu_argv(image=image or make_image(tmp_path / "image"), overlay=lab / "overlay.qcow2",
                     accel=accel, cpus=2, memory=2048, ssh_port=ssh_port,
                     serial_log=lab / "serial.log", qmp_socket=lab / "qmp.sock", name=name)


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def options(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def contains_run(argv: list[str], run: list[str]) -> bool:
    return any(argv[i:i + len(run)] == run for i in range(len(argv) - len(run) + 1))


# --------------------------------------------------------------------------- qemu_argv


def test_argv_basics(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    argv = argv_for(tmp_path, image, name="mylab")
    assert argv[0] == QEMU == "qemu-system-x86_64"
    assert all(isinstance(arg, str) for arg in argv)
    assert option(argv, "-name") == "fentry-lab-mylab"
    assert option(argv, "-smp") == "2"
    assert option(argv, "-m") == "2048"
    assert option(argv, "-kernel") == str(image.kernel)
    overlay = tmp_path / "labs" / "mylab" / "overlay.qcow2"
    assert option(argv, "-drive") == (
        f"file={overlay},if=none,id=root,format=qcow2,discard=unmap")
    serial = tmp_path / "labs" / "mylab" / "serial.log"
    assert option(argv, "-chardev") == f"file,id=console,path={serial},append=on"
    assert option(argv, "-serial") == "chardev:console"
    qmp = tmp_path / "labs" / "mylab" / "qmp.sock"
    assert option(argv, "-qmp") == f"unix:{qmp},server=on,wait=off"
    assert option(argv, "-display") == "none"
    assert option(argv, "-monitor") == "none"
    assert "-no-reboot" in argv


def test_ssh_forward_binds_loopback_only(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, ssh_port=45678)
    netdevs = options(argv, "-netdev")
    assert len(netdevs) == 1
    assert netdevs[0].startswith("user,")
    forwards = [fwd for arg in argv for fwd in re.findall(r"hostfwd=([^,]+)", arg)]
    assert forwards == ["tcp:127.0.0.1:45678-:22"]
    assert "0.0.0.0" not in " ".join(argv)
    assert any(d.startswith("virtio-net-pci,netdev=net0") for d in options(argv, "-device"))


def test_virtio_disk(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, make_image(tmp_path / "image", disk_interface="virtio"))
    devices = options(argv, "-device")
    assert "virtio-blk-pci,drive=root" in devices
    assert not any(d.startswith("nvme") for d in devices)


def test_nvme_disk(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, make_image(tmp_path / "image", disk_interface="nvme",
                                         root_device="/dev/nvme0n1"))
    devices = options(argv, "-device")
    assert "nvme,drive=root,serial=fentry-lab" in devices
    assert not any(d.startswith("virtio-blk") for d in devices)
    assert "root=/dev/nvme0n1" in option(argv, "-append").split()


def test_initrd_only_when_the_manifest_says_yes(tmp_path: Path) -> None:
    with_initrd = make_image(tmp_path / "a", initrd="yes")
    argv = argv_for(tmp_path, with_initrd)
    assert option(argv, "-initrd") == str(with_initrd.initrd)
    assert argv.index("-initrd") > argv.index("-kernel")
    for value in ("no", "", "true", None):
        argv = argv_for(tmp_path, make_image(tmp_path / "b", initrd=value))
        assert "-initrd" not in argv, value


def test_tcg_arguments(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, accel=TCG)
    assert contains_run(argv, ["-accel", "tcg,thread=multi", "-cpu", "max"])
    assert "kvm" not in argv
    assert options(argv, "-accel") == ["tcg,thread=multi"]


def test_kvm_arguments(tmp_path: Path) -> None:
    argv = argv_for(tmp_path, accel=KVM)
    assert contains_run(argv, ["-accel", "kvm", "-cpu", "host"])
    assert options(argv, "-accel") == ["kvm"]


def test_kernel_command_line(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image", root_device="/dev/vda")
    argv = argv_for(tmp_path, image)
    cmdline = option(argv, "-append")
    assert cmdline == kernel_cmdline("/dev/vda")
    words = cmdline.split()
    assert "panic=-1" in words  # with -no-reboot: a panic ends qemu
    assert "console=ttyS0" in words  # the serial log is where readiness is seen
    assert "root=/dev/vda" in words
    assert "rw" in words
    lsm = [w for w in words if w.startswith("lsm=")]
    assert lsm and "bpf" not in lsm[0].removeprefix("lsm=").split(",")


def test_shlex_join_round_trips(tmp_path: Path) -> None:
    base = tmp_path / "dir with spaces & 'quotes'"
    image = make_image(base / "image", initrd="yes")
    argv = argv_for(base, image, name="odd")
    printed = shlex.join(argv)
    assert shlex.split(printed) == argv


# --------------------------------------------------------------------------- pid_is_lab


def own_cmdline() -> list[str]:
    return Path(f"/proc/{os.getpid()}/cmdline").read_bytes().decode().split("\0")


def test_pid_zero_and_negative_are_never_a_lab(tmp_path: Path) -> None:
    assert not pid_is_lab(0, tmp_path / "overlay.qcow2")
    assert not pid_is_lab(-1, tmp_path / "overlay.qcow2")


def test_dead_pid_is_not_a_lab(tmp_path: Path) -> None:
    marker = tmp_path / "overlay.qcow2"
    proc = subprocess.Popen([sys.executable, "-c", "pass", str(marker)])
    proc.wait()
    assert not Path(f"/proc/{proc.pid}").exists()
    assert not pid_is_lab(proc.pid, marker)


def test_this_process_with_a_foreign_marker(tmp_path: Path) -> None:
    marker = tmp_path / "not-in-any-cmdline" / "overlay.qcow2"
    assert str(marker) not in "\0".join(own_cmdline())
    assert not pid_is_lab(os.getpid(), marker)


def test_this_process_with_a_marker_in_its_cmdline() -> None:
    first = own_cmdline()[0]
    assert first
    marker = Path(first)
    assert str(marker) in "\0".join(own_cmdline())
    assert pid_is_lab(os.getpid(), marker)


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A live process with a lab-like overlay path in its argv, like a lab's qemu."""
    marker = tmp_path / "labs" / "default" / "overlay.qcow2"
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, f"file={marker},if=none"],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # exec has replaced the forked cmdline
        yield proc, marker
    finally:
        proc.kill()
        proc.wait()


def test_live_child_with_the_marker(sleeper: tuple[subprocess.Popen[bytes], Path],
                                    tmp_path: Path) -> None:
    proc, marker = sleeper
    assert pid_is_lab(proc.pid, marker)
    assert not pid_is_lab(proc.pid, tmp_path / "labs" / "other" / "overlay.qcow2")
    proc.kill()
    proc.wait()
    assert not pid_is_lab(proc.pid, marker)


@pytest.mark.parametrize(("accel", "boots"), [(TCG, 2), (KVM, 1)])
def test_an_int3_oops_while_booting_boots_once_more_under_tcg_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        accel: Accel, boots: int) -> None:
    """TCG's threads can meet a breakpoint the kernel's code patching left (seen here):
    one more boot, with the first console kept; a second oops, or any under KVM, stands."""
    from lab.config import Settings
    from lab.vm.qemu import BootOops, QemuBackend

    backend = QemuBackend(Settings(home=tmp_path, name="oops"))
    backend.directory.mkdir(parents=True)
    monkeypatch.setattr(backend, "argv", lambda image, accel, port: ["sleep", "60"])
    started: list[int] = []

    def wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> None:
        started.append(proc.pid)
        backend.serial_log().write_bytes(b"Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n")
        raise BootOops("The guest kernel failed while booting: Oops: int3.")

    monkeypatch.setattr(backend, "_wait_ready", wait_ready)
    with pytest.raises(BootOops):
        backend._boot(make_image(tmp_path / "image"), accel)
    assert len(started) == boots
    for pid in started:  # every stand-in qemu was stopped (gone, or a zombie of this test)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    if boots == 2:
        assert "booting again" in capsys.readouterr().err
        assert b"Oops: int3" in backend.serial_log().with_name("serial.log.1").read_bytes()
