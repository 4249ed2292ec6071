"""What both backends share about a boot: kernel command line, ready line, panic
patterns, boot timeout, build-ID check, and explaining a failure from the serial log."""

from __future__ import annotations

import re
from pathlib import Path

from lab.config import Settings
from lab.elf import build_id_from_notes
from lab.errors import LabFailure
from lab.vm.accel import Accel

# The guest's fentry-lab-ready unit prints this on the serial console once sshd listens.
READY = re.compile(rb"fentry-lab: ready uptime=(\S+) kernel=(\S+) notes=([A-Za-z0-9+/=]+)\r?\n")
# What a dying guest prints on the serial console.
# (With an initramfs, a root that never shows up ends in the initramfs's own panic.)
FATAL = re.compile(rb"(Kernel panic - not syncing.*|Oops: .*|BUG: kernel NULL pointer.*|"
                   rb"end Kernel panic.*|Kernel Offset: .*|Gave up waiting for root .*)")
BOOT_TIMEOUT_S = 45.0  # at KVM speed; multiplied by the accelerator's slowdown


def kernel_cmdline(root_device: str, extra: str = "", *, panic_exits: bool = True) -> str:
    """The guest kernel's command line.

    lsm= without "bpf": systemd otherwise loads a BPF LSM program at every boot.
    panic_exits: panic=-1 with qemu's -no-reboot turns a panic into qemu exiting; under
    libvirt a rebooting guest would be restarted in a loop, so it only halts there.
    """
    panic = "panic=-1 " if panic_exits else ""
    return (f"root={root_device} rw console=ttyS0 quiet lsm=lockdown,yama {panic}"
            f"systemd.show_status=false {extra}").strip()


def boot_timeout(settings: Settings, accel: Accel) -> float:
    """Seconds to wait for the ready line: the setting, else the default scaled by accel."""
    return settings.boot_timeout or BOOT_TIMEOUT_S * accel.slowdown


def check_build_id(uname: str, notes: bytes, expected: str, fix: str) -> None:
    """The running kernel must be the one whose debug vmlinux the image carries."""
    running = build_id_from_notes(notes)
    if running != expected:
        raise LabFailure(f"The guest runs kernel {uname} with build ID {running}, but the "
                         f"image's debug vmlinux has {expected}: the disassembly would not "
                         f"match the running code. {fix}")


def serial_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a serial log, indented, for an error message about a boot."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return " "
    shown = "\n".join(f"    {line}" for line in text.splitlines()[-lines:])
    return f"\n  Last lines of the serial log ({path}):\n{shown}\n  "


def explain_failure(serial_log: Path, lines: int = 25) -> str:
    """Why a lab failed, from its serial log: the panic line (if any) and the tail.

    For any code that lost a lab (a run whose SSH dropped) and wants to say why. Also
    looks at the rotated log of the previous boot when the current one is empty.
    """
    for path in (serial_log, serial_log.with_name(serial_log.name + ".1")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data.strip():
            continue
        fatal = FATAL.search(data)
        head = (f"The guest kernel failed: {fatal.group(1).decode('utf-8', 'replace').strip()}."
                if fatal else "No kernel panic on the serial console.")
        return head + serial_tail(path, lines)
    return f"The serial log {serial_log} is empty or missing."


def rotate_serial_log(serial_log: Path) -> None:
    """Keep the previous boot's console (a panic's last words) as serial.log.1."""
    if serial_log.is_file() and serial_log.stat().st_size:
        serial_log.replace(serial_log.with_name(serial_log.name + ".1"))
