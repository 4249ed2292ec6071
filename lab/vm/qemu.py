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
import subprocess
import time
from pathlib import Path

from lab import console
from lab.config import Settings
from lab.errors import LabError, LabFailure
from lab.host import process_start_time, processes_of, require_tools, run_checked
from lab.image.build import Image
from lab.image.keys import ensure_keys
from lab.ssh import Session, SshTarget
from lab.vm import health, snapshot, snapshot_store
from lab.vm.accel import Accel, slowdown
from lab.vm.base import (
    LabState,
    LabStatus,
    RunningLab,
    accel_and_image,
    lab_dir,
    lab_lock,
    lab_names,
)
from lab.vm.boot import (
    FATAL,
    READY,
    boot_timeout,
    check_build_id,
    rotate_serial_log,
    serial_tail,
)
from lab.vm.qemu_process import QEMU, _reap, free_port, opt, pid_is_lab, qemu_argv
from lab.vm.qmp import QmpError, qmp_command

HOSTFWD_FAILED = "Could not set up host forwarding rule"


class BootOops(LabFailure):
    """An `Oops: int3` while booting: under TCG, a breakpoint the kernel's text patching
    left for another vCPU's thread (seen on these machines); worth one more boot."""


class QemuBackend:
    name = "qemu"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lab_dir = lab_dir(settings.labs_dir, settings.name)
        self.directory = self.lab_dir
        self.overlay = self.directory / "overlay.qcow2"
        self.state_file = self.directory / "state.json"
        self.qmp_socket = self.directory / "qmp.sock"
        self.qemu_log = self.directory / "qemu.log"

    def names(self) -> list[str]:
        return lab_names(self.settings.labs_dir)

    # -- state -------------------------------------------------------------------------

    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    def _state(self) -> LabState:
        return LabState.load(self.state_file, self.settings.name, self.name)

    def _alive(self, state: LabState) -> bool:
        return pid_is_lab(state.pid, self.overlay, state.pid_start)

    def _strays(self) -> list[int]:
        """This lab's qemu processes, found by their command line (its overlay and its
        -name), when the state file is corrupt or lost track of one."""
        name = f"\0-name\0fentry-lab-{self.settings.name}\0".encode()
        found = []
        for pid in processes_of(opt(self.overlay)):
            with contextlib.suppress(OSError):
                if pid != os.getpid() and name in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return found

    def _lock(self, *, wait: bool = False) -> contextlib.AbstractContextManager[None]:
        return lab_lock(self.directory, self.settings.name, wait=wait)

    def status(self, *, probe: bool = True) -> LabStatus:
        """The lab's state; with probe, an up lab's guest is asked over SSH if it answers."""
        state = self._state()
        if state.corrupt:
            strays = self._strays()
            return LabStatus(name=state.name, backend=self.name, state="corrupt", release="",
                             kernel_release="", accel="", pid=strays[0] if strays else 0,
                             ssh_port=0, uptime_s=0.0,
                             problem=state.corrupt_message(self.state_file))
        alive = self._alive(state)
        label, problem = state.label(alive), ""
        if alive and probe:
            label, problem = health.probe(self._target(state.ssh_port), self.settings.name)
        elif label == "dead":
            problem = (f"its qemu (pid {state.pid}) is gone: see `invoke lab.logs`, then "
                       f"`invoke lab.up --name {self.settings.name}`")
        return LabStatus(
            name=state.name, backend=self.name, state=label, release=state.release,
            kernel_release=state.kernel_release, accel=state.accel,
            pid=state.pid if alive else 0, ssh_port=state.ssh_port if alive else 0,
            uptime_s=time.time() - state.started_at if alive else 0.0,
            image=state.image if alive else "", problem=problem,
        )

    def ssh_target(self) -> SshTarget:
        state = self._state()
        if state.corrupt:
            raise LabFailure(state.corrupt_message(self.state_file))
        if not self._alive(state):
            raise LabFailure(f"Lab {self.settings.name!r} is not running. Start it with "
                             f"`invoke lab.up --name {self.settings.name}`.")
        return self._target(state.ssh_port)

    def _target(self, port: int) -> SshTarget:
        keys = ensure_keys(self.settings.keys_dir)
        key_type, blob = keys.host_key_line()
        return SshTarget("127.0.0.1", port, "root", keys.client_private, key_type, blob)

    # -- up ----------------------------------------------------------------------------

    def up(self) -> RunningLab:
        require_tools({QEMU: "qemu-system-x86", "qemu-img": "qemu-utils"})
        with self._lock(wait=True):  # a concurrent up boots; this one then finds it up
            return self._up_locked()

    def _up_locked(self) -> RunningLab:
        state = self._state()
        if state.corrupt:
            raise LabFailure(state.corrupt_message(self.state_file))
        if self._alive(state):
            target = self._target(state.ssh_port)
            health.require_answers(target, self.settings.name, state.pid)
            console.say(f"lab {self.settings.name!r} is already up "
                        f"(pid {state.pid}, ssh port {state.ssh_port})")
            return RunningLab(target, state.image, state.accel)
        if state.wanted:
            console.warn(f"lab {self.settings.name!r}: its qemu (pid {state.pid}) died; "
                         "starting it again")
        for stray in self._strays():  # a qemu of this lab nobody tracks any more
            console.warn(f"stopping an untracked qemu of lab {self.settings.name!r} "
                         f"(pid {stray})")
            self._kill(stray)
        accel, image = accel_and_image(self.settings, "running emulated under TCG")
        # -- snapshot hook (lab/vm/snapshot.py): start from a matching ready snapshot --
        image = snapshot.lab_image(image)
        ready = snapshot.choose(self, image, accel)
        if ready is not None:
            try:
                target = self._restore(image, accel, ready)
                return RunningLab(target, str(image.directory), accel.name)
            except LabError as exc:
                console.warn(f"could not start from snapshot {ready.name} ({exc}); "
                             "removed it, booting cold")
                snapshot_store.remove(ready)
                self.overlay.unlink(missing_ok=True)
        # -- end of snapshot hook --
        self._prepare_overlay(image, state)
        target = self._boot(image, accel)
        return RunningLab(target, str(image.directory), accel.name)

    def _prepare_overlay(self, image: Image, state: LabState) -> None:
        if self.overlay.exists() and state.image != str(image.directory):
            console.say("the image changed since this lab was made: recreating its disk")
            self.overlay.unlink()
        if not self.overlay.exists():
            run_checked(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                         str(image.disk), str(self.overlay)], what="creating the lab's overlay")

    def _start(self, argv: list[str], image: Image, accel: Accel, port: int,
               serial_seed: bytes = b"") -> tuple[subprocess.Popen[bytes], LabState]:
        """Spawn qemu on a fresh serial log (starting with serial_seed; qemu appends) and QMP
        socket, and record it at once with its start time: a qemu killed in its first
        instants (empty /proc/PID/cmdline) is still recognised and stopped."""
        self.serial_log().write_bytes(serial_seed)
        self.qmp_socket.unlink(missing_ok=True)
        started = time.time()
        proc = self._spawn(argv)
        state = LabState(name=self.settings.name, backend=self.name, release=image.release,
                         image=str(image.directory), kernel_release=image.kernel_release,
                         build_id=image.build_id, accel=accel.name, pid=proc.pid,
                         pid_start=process_start_time(proc.pid) or 0, wanted=True,
                         ssh_port=port, started_at=started, argv=argv)
        state.save(self.state_file)
        return proc, state

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        try:
            with self.qemu_log.open("wb") as log:
                return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
        except OSError as exc:
            raise LabFailure(f"Could not start {argv[0]}: {exc}. Check the QEMU install "
                             "(Debian package qemu-system-x86).") from None

    def _boot(self, image: Image, accel: Accel) -> SshTarget:
        serial = self.serial_log()
        timeout = boot_timeout(self.settings, accel)
        rotate_serial_log(serial)  # a panic's last words survive the next up
        retried_oops = False
        for attempt in range(3):
            port = free_port()
            argv = self.argv(image, accel, port)
            proc, state = self._start(argv, image, accel, port)
            started = state.started_at
            try:
                console.say(f"booting lab {self.settings.name!r} ({image.release}, kernel "
                            f"{image.kernel_release}, {accel.name}); serial log: {serial}")
                ready = self._wait_ready(proc, timeout)
                if ready is None:  # port taken between choosing and binding: pick another
                    console.say(f"port {port} was taken; trying another ({attempt + 1}/3)")
                    continue
                target = self._target(port)
                check_build_id(ready.group(2).decode(), base64.b64decode(ready.group(3)),
                               image.build_id, "Rebuild the image with "
                               "`invoke image.build --force`.")
                with Session(target):  # SSH answers, with the pinned host key
                    pass
                state.ready_after_s = round(time.time() - started, 2)
                state.save(self.state_file)
                snapshot.save(self, image, accel, target)  # snapshot hook: once per key
                console.say(f"lab {self.settings.name!r} is up in {state.ready_after_s:.1f} s "
                            f"(guest ready at {float(ready.group(1)):.1f} s of its uptime): "
                            "`invoke lab.ssh`, or `invoke lab.ssh-config` for scp/rsync "
                            "(host key pinned)")
                return target
            except BootOops:
                self._kill(proc.pid, state.pid_start)
                state.pid, state.wanted = 0, False
                state.save(self.state_file)
                if accel.name != "tcg" or retried_oops:
                    raise
                retried_oops = True
                rotate_serial_log(serial)
                console.say("the emulated CPU hit a breakpoint left by the kernel's own code "
                            "patching while booting (Oops: int3, a known race of TCG's "
                            f"threads; log kept in {serial}.1): booting again")
            except BaseException:
                self._kill(proc.pid, state.pid_start)
                state.pid, state.wanted = 0, False
                state.save(self.state_file)
                raise
        raise LabFailure("Could not bind a free port on 127.0.0.1 for the lab's SSH forward "
                         "after 3 tries (each was taken before qemu could bind it). Free some "
                         "local ports and run `invoke lab.up` again.")

    def argv(self, image: Image, accel: Accel, port: int) -> list[str]:
        return qemu_argv(image=image, overlay=self.overlay, accel=accel,
                         cpus=self.settings.cpus, memory=self.settings.memory,
                         ssh_port=port, serial_log=self.serial_log(),
                         qmp_socket=self.qmp_socket, name=self.settings.name,
                         kernel_args=snapshot.kernel_args(self.settings.kernel_args),
                         ) + snapshot.extra_argv()

    # -- snapshot hooks (lab/vm/snapshot.py) ---------------------------------------------

    def _restore(self, image: Image, accel: Accel, ready: Path) -> SshTarget:
        """Start this lab from a ready snapshot: fresh overlay, saved memory, fixed guest."""
        snapshot.prepare_overlay(self, ready)
        port = free_port()
        boot_id = snapshot.new_boot_id()
        argv = self.argv(image, accel, port) + snapshot.incoming_argv(ready, boot_id)
        proc, state = self._start(argv, image, accel, port,
                                  serial_seed=snapshot.serial_seed(ready))
        started = state.started_at
        try:
            snapshot.wait_restored(self, proc, snapshot.RESTORE_TIMEOUT_S * accel.slowdown / 4)
            target = self._target(port)
            snapshot.fix_guest(target, boot_id)
        except BaseException:
            self._kill(proc.pid, state.pid_start)
            state.pid, state.wanted = 0, False
            state.save(self.state_file)
            raise
        state.ready_after_s = round(time.time() - started, 2)
        state.save(self.state_file)
        console.say(f"lab {self.settings.name!r} is up in {state.ready_after_s:.1f} s from "
                    f"snapshot {ready.name}: `invoke lab.ssh` or ssh -p {port} root@127.0.0.1")
        return target

    def reset(self) -> RunningLab:
        """Back to the pristine ready snapshot, memory and disk (made first if missing)."""
        require_tools({QEMU: "qemu-system-x86", "qemu-img": "qemu-utils"})
        with self._lock(wait=True):
            state = self._state()
            if self._alive(state):
                console.say(f"resetting lab {self.settings.name!r} (pid {state.pid})")
                self._stop_now(state.pid)
            state.pid, state.wanted = 0, False
            state.save(self.state_file)
            self.overlay.unlink(missing_ok=True)
            return self._up_locked()

    # -- end of snapshot hooks -----------------------------------------------------------

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
                failure = BootOops if fatal.group(1).startswith(b"Oops: int3") else LabFailure
                raise failure(f"The guest kernel failed while booting: "
                                 f"{fatal.group(1).decode('utf-8', 'replace').strip()}."
                                 f"{self._tail()}Check the kernel command line and the image "
                                 "(`invoke image.verify`).")
            if exited is not None:
                try:
                    log = self.qemu_log.read_text(errors="replace").strip()
                except OSError:
                    log = ""
                if HOSTFWD_FAILED in log:
                    return None
                raise LabFailure(f"qemu exited with status {exited} before the guest was ready. "
                                 f"qemu said: {log[-1500:] or '(nothing)'}{self._tail()}")
            if ticker.elapsed > timeout:
                raise LabFailure(f"The guest did not become ready within {timeout:.0f} s "
                                 f"(no ready line on the serial console).{self._tail()}"
                                 "Raise FENTRY_LAB_BOOT_TIMEOUT if this machine is very slow.")
            ticker.tick("still booting")
            time.sleep(0.05)

    def _tail(self) -> str:
        return serial_tail(self.serial_log())

    # -- down / destroy ----------------------------------------------------------------

    def down(self) -> None:
        with self._lock(wait=True):
            state = self._state()
            if state.corrupt:
                self._stop_strays()
                state = LabState(name=self.settings.name, backend=self.name)
                state.save(self.state_file)  # a clean state file again: the lab can go up
                console.say(f"lab {self.settings.name!r}: its unreadable state file was reset")
                return
            if not self._alive(state):
                if state.wanted:
                    console.say(f"lab {self.settings.name!r} was dead (pid {state.pid} gone)")
                else:
                    console.say(f"lab {self.settings.name!r} is not running")
                state.pid, state.wanted = 0, False
                state.save(self.state_file)
                return
            console.say(f"powering off lab {self.settings.name!r} (pid {state.pid})")
            self._poweroff(state, grace=8.0 * slowdown(state.accel))
            state.pid, state.wanted = 0, False
            state.save(self.state_file)
            console.say(f"lab {self.settings.name!r} is down")

    def _poweroff(self, state: LabState, grace: float) -> None:
        # The guest has no logind to act on an ACPI power button, so ask systemd directly;
        # QMP's system_powerdown and quit are the fallbacks.
        with contextlib.suppress(LabError), \
                Session(self._target(state.ssh_port), connect_timeout=5.0, attempts=1) as ssh:
            ssh.run("systemctl poweroff --no-block", timeout=10)
        if self._wait_exit(state.pid, grace, state.pid_start):
            return
        self._qmp("system_powerdown", state.pid, state.pid_start)
        if self._wait_exit(state.pid, 2.0, state.pid_start):
            return
        self._stop_now(state.pid, state.pid_start)

    def _stop_now(self, pid: int, start: int = 0) -> None:
        """QMP quit (qemu exits at once, the guest is not asked), then signals."""
        self._qmp("quit", pid, start)
        if not self._wait_exit(pid, 3.0, start):
            self._kill(pid, start)

    def _stop_strays(self) -> None:
        for pid in self._strays():
            console.say(f"stopping qemu pid {pid} of lab {self.settings.name!r}")
            self._kill(pid)

    def _qmp(self, command: str, pid: int, start: int = 0) -> None:
        if not pid_is_lab(pid, self.overlay, start):
            return
        try:
            qmp_command(self.qmp_socket, command, timeout=3.0)
        except QmpError as exc:  # the socket may be gone with qemu
            if pid_is_lab(pid, self.overlay, start):
                console.say(f"QMP {command} failed ({exc}); falling back")

    def _wait_exit(self, pid: int, seconds: float, start: int = 0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not pid_is_lab(pid, self.overlay, start):
                _reap(pid)
                return True
            time.sleep(0.1)
        gone = not pid_is_lab(pid, self.overlay, start)
        if gone:
            _reap(pid)
        return gone

    def _kill(self, pid: int, start: int = 0) -> None:
        """SIGTERM then SIGKILL, only if pid is still this lab's qemu; reaps it if ours."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pid_is_lab(pid, self.overlay, start):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            self._wait_exit(pid, 3.0, start)

    def destroy(self) -> None:
        import shutil

        # Waits for a command that is starting the lab, so nothing is created under it.
        with self._lock(wait=True):
            state = self._state()
            if self._alive(state):
                console.say(f"stopping lab {self.settings.name!r} (pid {state.pid})")
                self._stop_now(state.pid, state.pid_start)  # its disk goes next: be quick
            self._stop_strays()
            if self.directory.exists():
                shutil.rmtree(self.directory)
        console.say(f"lab {self.settings.name!r} destroyed")
