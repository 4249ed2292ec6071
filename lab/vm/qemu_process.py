"""The qemu process seen from outside: its command line, its loopback SSH port, and telling
our qemu from any other process (by PID, start time and the lab's overlay on its command line).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from lab.errors import LabFailure
from lab.host import is_process
from lab.image.build import Image
from lab.vm.accel import Accel
from lab.vm.boot import kernel_cmdline

QEMU = "qemu-system-x86_64"


def opt(value: object) -> str:
    """A value inside a qemu -option string: a comma is doubled, or it would split it."""
    return str(value).replace(",", ",,")


def qemu_argv(*, image: Image, overlay: Path, accel: Accel, cpus: int, memory: int,
              ssh_port: int, serial_log: Path, qmp_socket: Path, name: str,
              kernel_args: str = "") -> list[str]:
    """The whole QEMU command line, built from small pieces (printable with shlex.join)."""
    disk = (["-device", "nvme,drive=root,serial=fentry-lab"]
            if image.boot["disk_interface"] == "nvme" else ["-device", "virtio-blk-pci,drive=root"])
    initrd = ["-initrd", str(image.initrd)] if image.boot.get("initrd") == "yes" else []
    return [
        QEMU, "-name", f"fentry-lab-{name}",
        *accel.qemu_args,
        "-smp", str(cpus), "-m", str(memory),
        "-kernel", str(image.kernel), *initrd,
        "-append", kernel_cmdline(image.boot["root_device"], kernel_args),
        "-drive", f"file={opt(overlay)},if=none,id=root,format=qcow2,discard=unmap",
        *disk,
        # Only SSH is forwarded, and only on the host's loopback; restrict=on cuts the guest
        # off from the host (10.0.2.2 reaches nothing) and the outside world.
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",  # no PXE ROM: direct kernel boot
        # append=on: the log may start with a restored snapshot's boot console.
        "-chardev", f"file,id=console,path={opt(serial_log)},append=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{opt(qmp_socket)},server=on,wait=off",
        "-display", "none", "-monitor", "none", "-no-reboot",
    ]


def free_port() -> int:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    except OSError as exc:
        raise LabFailure(f"Could not get a free TCP port on 127.0.0.1 for the lab's SSH "
                         f"forward ({exc.strerror or exc}). Free some local ports (or raise "
                         "net.ipv4.ip_local_port_range) and run `invoke lab.up` again.") from None


def pid_is_lab(pid: int, marker: Path, start_time: int = 0) -> bool:
    """True when pid is alive and is the qemu started for this lab (not a reused PID)."""
    return is_process(pid, marker=opt(marker), start_time=start_time)


def _reap(pid: int) -> None:
    """Collect a qemu this process started (a long-running caller, such as a matrix run,
    would otherwise keep it as a zombie); a qemu started by an earlier command is not ours."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
