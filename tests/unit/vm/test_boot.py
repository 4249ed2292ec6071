"""What both backends share about a boot (lab.vm.boot) and qemu's option strings."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lab.config import Settings
from lab.errors import LabFailure
from lab.vm import qemu_process
from lab.vm.accel import Accel
from lab.vm.boot import (
    boot_timeout,
    check_build_id,
    explain_failure,
    kernel_cmdline,
    rotate_serial_log,
)
from tests.unit.vm.test_qemu_argv import argv_for, option

NOTES = (b"\x04\x00\x00\x00\x14\x00\x00\x00\x03\x00\x00\x00GNU\x00" + bytes(range(20)))


def test_boot_timeout_scales_with_the_one_slowdown() -> None:
    assert boot_timeout(Settings(), Accel("kvm", "")) == 45.0
    assert boot_timeout(Settings(), Accel("tcg", "")) == 180.0
    assert boot_timeout(Settings(boot_timeout=7.0), Accel("tcg", "")) == 7.0


def test_kernel_cmdline_panic_policy() -> None:
    assert "panic=-1" in kernel_cmdline("/dev/vda").split()
    assert "panic=-1" not in kernel_cmdline("/dev/vda", "x=1", panic_exits=False).split()
    assert kernel_cmdline("/dev/vda", "x=1").endswith(" x=1")


def test_build_id_check_has_one_message() -> None:
    check_build_id("6.12", NOTES, bytes(range(20)).hex(), "fix")
    with pytest.raises(LabFailure, match=r"build ID .* but the image's debug vmlinux has "
                                         r"ff.*fix$") as info:
        check_build_id("6.12", NOTES, "ff" * 20, "fix")
    assert info.value.code == 2


def test_panic_log_is_kept_and_explained(tmp_path: Path) -> None:
    serial = tmp_path / "serial.log"
    serial.write_text("booting\nKernel panic - not syncing: sysrq triggered crash\nend\n")
    rotate_serial_log(serial)  # the next boot
    serial.write_text("")
    assert "sysrq triggered crash" in (tmp_path / "serial.log.1").read_text()
    text = explain_failure(serial)
    assert text.startswith("The guest kernel failed: Kernel panic - not syncing: sysrq")
    assert "end" in text
    assert explain_failure(tmp_path / "nothing.log").startswith("The serial log")


def test_restricted_network_and_escaped_commas(tmp_path: Path) -> None:
    argv = argv_for(tmp_path / "a,b")
    netdev = option(argv, "-netdev")
    assert netdev.split(",")[:3] == ["user", "id=net0", "restrict=on"]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    drive = option(argv, "-drive")
    assert drive.startswith(f"file={tmp_path}/a,,b/labs/default/overlay.qcow2,if=none")
    assert option(argv, "-chardev").endswith("a,,b/labs/default/serial.log,append=on")


def test_no_free_port_is_a_lab_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(LabFailure, match="Could not get a free TCP port") as info:
        qemu_process.free_port()
    assert info.value.code == 2
