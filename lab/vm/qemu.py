"""The QEMU backend: direct kernel boot of the cached image on a per-lab qcow2 overlay.

One lab = one directory under the cache's labs/ with its overlay, state file, serial log,
QEMU's own log and QMP socket. QEMU runs detached from the invoking shell so the lab
outlives the command that started it; it is only ever stopped by the PID recorded here,
after checking that PID is still this lab's qemu.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from lab import console
from lab.config import Settings
from lab.elf import build_id_from_notes
from lab.errors import LabError
from lab.host import require_tools, run_checked
from lab.image.build import Image
from lab.image.keys import ensure_keys
from lab.ssh import Session, SshTarget
from lab.vm.accel import Accel
from lab.vm.base import LabState, LabStatus, accel_and_image, lab_lock, serial_tail

QEMU = "qemu-system-x86_64"
READY = re.compile(rb"fentry-lab: ready uptime=(\S+) kernel=(\S+) notes=([A-Za-z0-9+/=]+)\r?\n")
# What a dying guest prints on the serial console.
FATAL = re.compile(rb"(Kernel panic - not syncing.*|Oops: .*|BUG: kernel NULL pointer.*|"
                   rb"end Kernel panic.*|Kernel Offset: .*)")
BOOT_TIMEOUT_S = 45.0  # at KVM speed; multiplied by the accelerator's slowdown
HOSTFWD_FAILED = "Could not set up host forwarding rule"


def kernel_cmdline(image: Image, extra: str = "") -> str:
    boot = image.boot
    # lsm= without "bpf": systemd otherwise loads a BPF LSM program at every boot.
    # panic=-1 with -no-reboot turns a panic into qemu exiting, which the watchdog sees.
    return (f"root={boot['root_device']} rw console=ttyS0 quiet lsm=lockdown,yama panic=-1 "
            f"systemd.show_status=false {extra}").strip()


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
        "-kernel", str(image.kernel), *initrd, "-append", kernel_cmdline(image, kernel_args),
        "-drive", f"file={overlay},if=none,id=root,format=qcow2,discard=unmap",
        *disk,
        # Only SSH is forwarded, and only on the host's loopback.
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",  # no PXE ROM: direct kernel boot
        "-serial", f"file:{serial_log}",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-display", "none", "-monitor", "none", "-no-reboot",
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_of(marker: Path | str) -> list[int]:
    """PIDs of the processes whose command line contains marker (a lab's directory)."""
    needle = str(marker).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def pid_is_lab(pid: int, marker: Path) -> bool:
    """True when pid is alive and is the qemu started for this lab (not a reused PID)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(marker).encode() in cmdline


def _reap(pid: int) -> None:
    """Collect a qemu this process started (a long-running caller, such as a matrix run,
    would otherwise keep it as a zombie); a qemu started by an earlier command is not ours."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class QemuBackend:
    name = "qemu"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = settings.labs_dir / settings.name
        self.overlay = self.directory / "overlay.qcow2"
        self.state_file = self.directory / "state.json"
        self.qmp_socket = self.directory / "qmp.sock"
        self.qemu_log = self.directory / "qemu.log"

    # -- state -------------------------------------------------------------------------

    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    def _state(self) -> LabState:
        return LabState.load(self.state_file, self.settings.name, self.name)

    def _alive(self, state: LabState) -> bool:
        return pid_is_lab(state.pid, self.overlay)

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return lab_lock(self.directory, self.settings.name)

    def status(self) -> LabStatus:
        state = self._state()
        alive = self._alive(state)
        return LabStatus(
            name=state.name, backend=self.name, state=state.label(alive), release=state.release,
            kernel_release=state.kernel_release, accel=state.accel,
            pid=state.pid if alive else 0, ssh_port=state.ssh_port if alive else 0,
            uptime_s=time.time() - state.started_at if alive else 0.0,
            image=state.image if alive else "",
        )

    def ssh_target(self) -> SshTarget:
        state = self._state()
        if not self._alive(state):
            raise LabError(f"Lab {self.settings.name!r} is not running. Start it with "
                           f"`invoke lab.up --name {self.settings.name}`.", code=2)
        return self._target(state.ssh_port)

    def _target(self, port: int) -> SshTarget:
        keys = ensure_keys(self.settings.keys_dir)
        key_type, blob = keys.host_key_line()
        return SshTarget("127.0.0.1", port, "root", keys.client_private, key_type, blob)

    # -- up ----------------------------------------------------------------------------

    def up(self) -> SshTarget:
        require_tools({QEMU: "qemu-system-x86", "qemu-img": "qemu-utils"})
        with self._lock():
            state = self._state()
            if self._alive(state):
                console.say(f"lab {self.settings.name!r} is already up "
                            f"(pid {state.pid}, ssh port {state.ssh_port})")
                return self._target(state.ssh_port)
            if state.pid:
                console.warn(f"lab {self.settings.name!r}: its qemu (pid {state.pid}) died; "
                             "starting it again")
            accel, image = accel_and_image(self.settings, "running emulated under TCG")
            self._prepare_overlay(image, state)
            return self._boot(image, accel)

    def _prepare_overlay(self, image: Image, state: LabState) -> None:
        if self.overlay.exists() and state.image != str(image.directory):
            console.say("the image changed since this lab was made: recreating its disk")
            self.overlay.unlink()
        if not self.overlay.exists():
            run_checked(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                         str(image.disk), str(self.overlay)], what="creating the lab's overlay")

    def _boot(self, image: Image, accel: Accel) -> SshTarget:
        serial = self.serial_log()
        timeout = self.settings.boot_timeout or BOOT_TIMEOUT_S * accel.slowdown
        for attempt in range(3):
            port = free_port()
            argv = qemu_argv(image=image, overlay=self.overlay, accel=accel,
                             cpus=self.settings.cpus, memory=self.settings.memory,
                             ssh_port=port, serial_log=serial, qmp_socket=self.qmp_socket,
                             name=self.settings.name, kernel_args=self.settings.kernel_args)
            serial.write_bytes(b"")
            self.qmp_socket.unlink(missing_ok=True)
            started = time.time()
            with self.qemu_log.open("wb") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
            state = LabState(name=self.settings.name, backend=self.name, release=image.release,
                             image=str(image.directory), kernel_release=image.kernel_release,
                             build_id=image.build_id, accel=accel.name, pid=proc.pid,
                             ssh_port=port, started_at=started, argv=argv)
            state.save(self.state_file)
            try:
                console.say(f"booting lab {self.settings.name!r} ({image.release}, kernel "
                            f"{image.kernel_release}, {accel.name}); serial log: {serial}")
                ready = self._wait_ready(proc, timeout)
                if ready is None:  # port taken between choosing and binding: pick another
                    console.say(f"port {port} was taken; trying another ({attempt + 1}/3)")
                    continue
                target = self._target(port)
                self._check_kernel(ready, image)
                with Session(target):  # SSH answers, with the pinned host key
                    pass
                state.ready_after_s = round(time.time() - started, 2)
                state.save(self.state_file)
                console.say(f"lab {self.settings.name!r} is up in {state.ready_after_s:.1f} s "
                            f"(guest ready at {float(ready.group(1)):.1f} s of its uptime): "
                            "`invoke lab.ssh`, or `invoke lab.ssh-config` for scp/rsync "
                            "(host key pinned)")
                return target
            except BaseException:
                self._kill(proc.pid)
                state.pid = 0
                state.save(self.state_file)
                raise
        raise LabError("Could not find a free port on 127.0.0.1 for the lab's SSH forward "
                       "after 3 tries.")

    def _wait_ready(self, proc: subprocess.Popen[bytes],
                    timeout: float) -> re.Match[bytes] | None:
        """Watch the serial log until the guest's ready line; None if the port was taken.

        Fails fast on a kernel panic or oops, on qemu exiting, and at the timeout, always
        with the last lines of the serial log.
        """
        ticker = console.Ticker("waiting for the guest", every_s=10.0)
        serial = self.serial_log()
        seen = b""
        while True:
            exited = proc.poll()  # polled before reading, so a dying guest's last words count
            with contextlib.suppress(OSError):
                seen = serial.read_bytes()
            match = READY.search(seen)
            if match:
                return match
            fatal = FATAL.search(seen)
            if fatal:
                if exited is None:
                    time.sleep(0.5)  # let the rest of the trace reach the log
                raise LabError(f"The guest kernel failed while booting: "
                               f"{fatal.group(1).decode('utf-8', 'replace').strip()}."
                               f"{self._tail()}Check the kernel command line and the image "
                               "(`invoke image.verify`).", code=2)
            if exited is not None:
                log = self.qemu_log.read_text(errors="replace").strip()
                if HOSTFWD_FAILED in log:
                    return None
                raise LabError(f"qemu exited with status {exited} before the guest was ready. "
                               f"qemu said: {log[-1500:] or '(nothing)'}{self._tail()}", code=2)
            if ticker.elapsed > timeout:
                raise LabError(f"The guest did not become ready within {timeout:.0f} s "
                               f"(no ready line on the serial console).{self._tail()}"
                               "Raise FENTRY_LAB_BOOT_TIMEOUT if this machine is very slow.",
                               code=2)
            ticker.tick("still booting")
            time.sleep(0.05)

    def _tail(self) -> str:
        return serial_tail(self.serial_log())

    @staticmethod
    def _check_kernel(ready: re.Match[bytes], image: Image) -> None:
        """The running kernel must be the one whose debug vmlinux the image carries."""
        uname = ready.group(2).decode()
        running = build_id_from_notes(base64.b64decode(ready.group(3)))
        if running != image.build_id:
            raise LabError(f"The guest runs kernel {uname} with build ID {running}, but "
                           f"the image's debug vmlinux has {image.build_id}: the disassembly "
                           "would not match the running code. Rebuild the image with "
                           "`invoke image.build --force`.", code=2)

    # -- down / destroy ----------------------------------------------------------------

    def down(self) -> None:
        with self._lock():
            state = self._state()
            if not self._alive(state):
                if state.pid:
                    console.say(f"lab {self.settings.name!r} was dead (pid {state.pid} gone)")
                else:
                    console.say(f"lab {self.settings.name!r} is not running")
                state.pid = 0
                state.save(self.state_file)
                return
            slowdown = 4.0 if state.accel == "tcg" else 1.0
            console.say(f"powering off lab {self.settings.name!r} (pid {state.pid})")
            self._poweroff(state, grace=8.0 * slowdown)
            state.pid = 0
            state.save(self.state_file)
            console.say(f"lab {self.settings.name!r} is down")

    def _poweroff(self, state: LabState, grace: float) -> None:
        # The guest has no logind to act on an ACPI power button, so ask systemd directly;
        # QMP's system_powerdown and quit are the fallbacks.
        with contextlib.suppress(LabError), \
                Session(self._target(state.ssh_port), connect_timeout=5.0) as ssh:
            ssh.run("systemctl poweroff --no-block", timeout=10)
        if self._wait_exit(state.pid, grace):
            return
        self._qmp("system_powerdown", state.pid)
        if self._wait_exit(state.pid, 2.0):
            return
        self._stop_now(state.pid)

    def _stop_now(self, pid: int) -> None:
        """QMP quit (qemu exits at once, the guest is not asked), then signals."""
        self._qmp("quit", pid)
        if not self._wait_exit(pid, 3.0):
            self._kill(pid)

    def _qmp(self, command: str, pid: int) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        if not pid_is_lab(pid, self.overlay):
            return
        try:
            qmp = QEMUMonitorProtocol(str(self.qmp_socket))
            qmp.settimeout(3.0)
            qmp.connect()
            qmp.cmd(command)
            qmp.close()
        except Exception as exc:  # the socket may be gone with qemu
            if pid_is_lab(pid, self.overlay):
                console.say(f"QMP {command} failed ({exc}); falling back")

    def _wait_exit(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not pid_is_lab(pid, self.overlay):
                _reap(pid)
                return True
            time.sleep(0.1)
        gone = not pid_is_lab(pid, self.overlay)
        if gone:
            _reap(pid)
        return gone

    def _kill(self, pid: int) -> None:
        """SIGTERM then SIGKILL, only if pid is still this lab's qemu; reaps it if ours."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pid_is_lab(pid, self.overlay):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            self._wait_exit(pid, 3.0)

    def destroy(self) -> None:
        state = self._state()
        if self._alive(state):
            with self._lock():
                console.say(f"stopping lab {self.settings.name!r} (pid {state.pid})")
                self._stop_now(state.pid)  # its disk is deleted next: no need to be gentle
        if self.directory.exists():
            import shutil

            shutil.rmtree(self.directory)
        console.say(f"lab {self.settings.name!r} destroyed")
