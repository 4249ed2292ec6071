"""The Vagrant backend: the same lab through `vagrant up` (vagrant-libvirt, libvirt's qemu).

The top-level Vagrantfile describes the VM; this module drives `vagrant` with the lab's
settings in FENTRY_LAB_* variables, so `invoke lab.up --backend vagrant` and a plain
`vagrant up` in the checkout make the same VM (lab `default` is Vagrant machine `default`,
libvirt domain `fentry-lab-default`). SSH goes through paramiko with the address, port,
user and key that `vagrant ssh-config` reports, and the guest's host key pinned to the lab's
own (lab/keys.py): Vagrant's own SSH does not check host keys, the lab does.

The guest lives on an isolated libvirt network (no forwarding, nothing reachable from off
the host) and takes its address by DHCP (kernel flag `fentry_lab.net=dhcp`), because
vagrant-libvirt finds a guest only through libvirt's DHCP leases. Per-lab files (state,
serial console log, lock) are under the cache's vagrant/labs/<name>/, apart from the QEMU
labs' directories, so a QEMU lab and a Vagrant lab may share a name.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from lab import console
from lab.config import REPO_ROOT, Settings
from lab.errors import LabError, LabFailure
from lab.image.build import Image, find_image
from lab.image.keys import ensure_keys
from lab.ssh import Session, SshTarget
from lab.vm import health
from lab.vm.accel import Accel, choose_accel
from lab.vm.base import (
    LabState,
    LabStatus,
    RunningLab,
    accel_and_image,
    lab_lock,
)
from lab.vm.boot import FATAL, check_build_id, serial_tail
from lab.vm.vagrant.box import (
    Box,
    add_box,
    box_name,
    clean_vagrant_line,
    vagrant_env,
)
from lab.vm.vagrant.libvirt import (
    LIBVIRTD_SOCKET,
    check_tools,
    domain_state,
    ensure_daemons,
    qemu_pid,
    socket_answers,
    virsh_ok,
)
from lab.vm.vagrant.vagrantfile import (
    boot_timeout,
    cleanup_after_destroy,
    domain_name,
    lab_directory,
    lab_names,
    libvirt_driver,
    prepare_for_up,
    require_dhcp_client,
    settings_environment,
)

VAGRANT = "vagrant"
# Box upload into the pool (first up of a box) and domain creation, on top of the boot.
VAGRANT_UP_EXTRA_S = 300.0


# -- `vagrant ssh-config` ----------------------------------------------------------------


@dataclass(frozen=True)
class SshConfig:
    host: str
    port: int
    user: str
    identity_files: tuple[str, ...]


def parse_ssh_config(text: str) -> SshConfig:
    """The first Host block of `vagrant ssh-config` (OpenSSH client config syntax)."""
    import paramiko

    hosts = [line.split(None, 1)[1].strip() for line in text.splitlines()
             if line.strip().lower().startswith("host ") and len(line.split(None, 1)) == 2]
    config = paramiko.SSHConfig.from_text(text).lookup(hosts[0] if hosts else "default")
    # lookup() falls back to the looked-up name itself when HostName is missing.
    given = any(line.strip().lower().startswith("hostname") for line in text.splitlines())
    identities = tuple(config.get("identityfile", []))
    missing = [k for k, ok in (("hostname", given), ("user", "user" in config),
                               ("identityfile", bool(identities))) if not ok]
    if missing:
        raise LabFailure("`vagrant ssh-config` gave no " + ", ".join(missing) +
                         f"; it said:\n{text.strip()[:800]}")
    try:
        port = int(config.get("port", "22"))
    except ValueError:
        raise LabFailure(f"`vagrant ssh-config` gave a port that is not a number: "
                         f"{config.get('port')!r}.") from None
    return SshConfig(config["hostname"], port, config["user"], identities)


# -- the backend -------------------------------------------------------------------------


@dataclass
class VagrantState(LabState):
    host: str = ""
    user: str = ""
    key_file: str = ""
    domain: str = ""
    box: str = ""


class VagrantBackend:
    name = "vagrant"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = lab_directory(settings)
        self.lab_dir = self.directory
        self.state_file = self.directory / "state.json"
        self.domain = domain_name(settings.name)

    # -- state -------------------------------------------------------------------------

    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    def _state(self) -> VagrantState:
        return cast(VagrantState, VagrantState.load(self.state_file, self.settings.name,
                                                    self.name))

    def _running(self) -> bool:
        return socket_answers(LIBVIRTD_SOCKET) and domain_state(self.domain) == "running"

    def _lock(self, *, wait: bool = False) -> contextlib.AbstractContextManager[None]:
        return lab_lock(self.directory, self.settings.name, wait=wait)

    def names(self) -> list[str]:
        return lab_names(self.settings)

    def status(self, *, probe: bool = True) -> LabStatus:
        state = self._state()
        running = self._running()
        label = "corrupt" if state.corrupt else state.label(running)
        problem = state.corrupt_message(self.state_file) if state.corrupt else ""
        if running and probe and state.host and not state.corrupt:
            label, problem = health.probe(
                self._target(SshConfig(state.host, state.ssh_port, state.user,
                                       (state.key_file,))), self.settings.name)
        return LabStatus(
            name=self.settings.name, backend=self.name, state=label,
            release=state.release, kernel_release=state.kernel_release, accel=state.accel,
            pid=qemu_pid(self.domain) if running else 0,
            ssh_port=state.ssh_port if running else 0,
            uptime_s=time.time() - state.started_at if running and state.started_at else 0.0,
            image=state.image if running else "",
            problem=problem,
        )

    def ssh_target(self) -> SshTarget:
        state = self._state()
        if not self._running():
            raise LabFailure(f"Lab {self.settings.name!r} is not running under Vagrant. Start it "
                           f"with `invoke lab.up --backend vagrant --name {self.settings.name}`.")
        if not state.host:  # brought up by a plain `vagrant up`: ask Vagrant once
            state = self._adopt(state)
        return self._target(SshConfig(state.host, state.ssh_port, state.user,
                                      (state.key_file,)))

    def _adopt(self, state: VagrantState) -> VagrantState:
        """Record a lab that a plain `vagrant up` started, as `lab.up` would have."""
        config = parse_ssh_config(self._vagrant("ssh-config", timeout=120))
        state.host, state.ssh_port, state.user = config.host, config.port, config.user
        state.key_file = config.identity_files[0]
        state.domain, state.pid = self.domain, qemu_pid(self.domain)
        state.wanted = True
        image = find_image(self.settings)
        if image is not None:
            state.release, state.image = image.release, str(image.directory)
            state.kernel_release, state.build_id = image.kernel_release, image.build_id
            state.box = box_name(image)
        with contextlib.suppress(LabError):
            state.accel = choose_accel(self.settings.accel).name
        state.save(self.state_file)
        return state

    def _target(self, config: SshConfig) -> SshTarget:
        keys = ensure_keys(self.settings.keys_dir)
        key_type, blob = keys.host_key_line()  # the guest's host key is the lab's own
        return SshTarget(config.host, config.port, config.user, Path(config.identity_files[0]),
                         key_type, blob)

    # -- vagrant -----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, **vagrant_env(), **settings_environment(self.settings),
                "FENTRY_LAB_PYTHON": sys.executable, "VAGRANT_CWD": str(REPO_ROOT),
                "VAGRANT_DEFAULT_PROVIDER": "libvirt"}

    def _vagrant(self, *args: str, timeout: float = 600.0) -> str:
        proc = subprocess.run([VAGRANT, *args], cwd=REPO_ROOT, env=self._env(),
                              capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise LabFailure(f"`vagrant {' '.join(args)}` failed (exit {proc.returncode}): "
                           f"{detail}")
        return proc.stdout

    def _vagrant_streamed(self, args: Sequence[str], *, timeout: float,
                          watch_serial: bool = False) -> None:
        """Run vagrant showing its progress; stop it on a guest panic or at the timeout."""
        tail: collections.deque[str] = collections.deque(maxlen=30)
        offset = self._serial_size()
        proc = subprocess.Popen([VAGRANT, *args], cwd=REPO_ROOT, env=self._env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = clean_vagrant_line(raw)
                if line:
                    tail.append(line)
                    console.say(f"  {line}")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        ticker = console.Ticker(f"vagrant {args[0]}", every_s=15.0)
        failure = ""
        while proc.poll() is None:
            if watch_serial:
                fatal = FATAL.search(self._serial_since(offset))
                if fatal:
                    time.sleep(0.5)
                    failure = ("The guest kernel failed while booting: "
                               f"{fatal.group(1).decode('utf-8', 'replace').strip()}.")
                    break
            if ticker.elapsed > timeout:
                failure = f"`vagrant {' '.join(args)}` did not finish within {timeout:.0f} s."
                break
            ticker.tick()
            time.sleep(0.2)
        if failure:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(5)
        if failure or proc.returncode != 0:
            said = "\n".join(f"    {line}" for line in tail if line.strip())
            raise LabFailure(f"{failure or f'`vagrant {args[0]}` failed (exit {proc.returncode}).'}"
                           f"\n  Vagrant said:\n{said}{self._tail()}")

    def _serial_size(self) -> int:
        try:
            return self.serial_log().stat().st_size
        except OSError:
            return 0

    def _serial_since(self, offset: int) -> bytes:
        try:
            with self.serial_log().open("rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def _tail(self) -> str:
        return serial_tail(self.serial_log())

    def _machine_known(self) -> bool:
        """Vagrant has this machine in the checkout's .vagrant (it made the domain)."""
        return (REPO_ROOT / ".vagrant" / "machines" / self.settings.name / "libvirt" / "id") \
            .is_file()

    # -- up ----------------------------------------------------------------------------

    def up(self) -> RunningLab:
        check_tools()
        ensure_daemons()
        with self._lock(wait=True):
            state = self._state()
            if state.host and self._running():
                console.say(f"lab {self.settings.name!r} is already up under Vagrant "
                            f"(domain {self.domain}, ssh {state.user}@{state.host})")
                return RunningLab(self.ssh_target(), state.image, state.accel)
            if state.wanted:
                console.warn(f"lab {self.settings.name!r}: its domain {self.domain} stopped; "
                             "starting it again")
            accel, image = accel_and_image(self.settings, 'libvirt driver "qemu" (TCG)')
            require_dhcp_client(image)
            box = add_box(self.settings, image)
            if self._machine_known() and state.box and state.box != box.name:
                console.say(f"the image changed since this lab was made ({state.box} -> "
                            f"{box.name}): recreating its VM")
                self._vagrant("destroy", "-f", timeout=300)
            prepare_for_up(self.settings)
            return RunningLab(self._boot(image, box, accel), str(image.directory), accel.name)

    def _boot(self, image: Image, box: Box, accel: Accel) -> SshTarget:
        started = time.time()
        state = VagrantState(name=self.settings.name, backend=self.name, release=image.release,
                             image=str(image.directory), kernel_release=image.kernel_release,
                             build_id=image.build_id, accel=accel.name, started_at=started,
                             domain=self.domain, box=box.name)
        console.say(f"vagrant up: lab {self.settings.name!r} ({image.release}, kernel "
                    f"{image.kernel_release}, libvirt driver {libvirt_driver(accel)}, box "
                    f"{box.name}); serial log: {self.serial_log()}")
        timeout = boot_timeout(self.settings, accel) + VAGRANT_UP_EXTRA_S
        try:
            self._vagrant_streamed(["up", "--provider", "libvirt", "--no-provision"],
                                   timeout=timeout, watch_serial=True)
            config = parse_ssh_config(self._vagrant("ssh-config", timeout=120))
            target = self._target(config)
            self._check_guest(target, image)
        except BaseException:
            self._stop_after_failure()
            raise
        state.host, state.ssh_port, state.user = config.host, config.port, config.user
        state.key_file = config.identity_files[0]
        state.pid, state.wanted = qemu_pid(self.domain), True
        state.ready_after_s = round(time.time() - started, 2)
        state.save(self.state_file)
        console.say(f"lab {self.settings.name!r} is up under Vagrant in "
                    f"{state.ready_after_s:.1f} s: `invoke lab.ssh --backend vagrant` or "
                    f"`vagrant ssh` ({config.user}@{config.host})")
        return target

    def _check_guest(self, target: SshTarget, image: Image) -> None:
        """SSH with the pinned host key; the running kernel must be the image's."""
        with Session(target, connect_timeout=15.0) as ssh:
            result = ssh.run("uname -r; base64 -w0 /sys/kernel/notes", timeout=30)
        lines = result.out.split()
        if result.exit_status != 0 or len(lines) < 2:
            raise LabFailure(f"Could not read the guest's kernel build ID over SSH: "
                             f"{result.err}")
        check_build_id(lines[0], base64.b64decode(lines[1]), image.build_id,
                       "Run `invoke image.box` and `invoke lab.destroy --backend vagrant`, "
                       "then up again.")

    def _stop_after_failure(self) -> None:
        """A failed up leaves no qemu running (the domain stays defined for the logs)."""
        if socket_answers(LIBVIRTD_SOCKET) and domain_state(self.domain) == "running":
            virsh_ok("destroy", self.domain)

    # -- down / destroy ----------------------------------------------------------------

    def down(self) -> None:
        with self._lock():
            state = self._state()
            if not self._running():
                console.say(f"lab {self.settings.name!r} is not running under Vagrant")
            else:
                console.say(f"vagrant halt: lab {self.settings.name!r} (domain {self.domain})")
                try:
                    self._vagrant_streamed(["halt"], timeout=120)
                except LabError as exc:
                    console.warn(f"graceful halt failed ({exc.message.splitlines()[0]}); "
                                 "forcing it off")
                    self._vagrant("halt", "--force", timeout=120)
                console.say(f"lab {self.settings.name!r} is down")
            if state.wanted or state.pid:
                state.pid, state.wanted = 0, False
                state.save(self.state_file)

    def reset(self) -> RunningLab:
        raise LabError("lab.reset needs the qemu backend: the vagrant backend has no ready "
                       "snapshots (vagrant-libvirt's `vagrant snapshot save/restore` would "
                       "fit; not wired yet). Use `invoke lab.destroy --backend vagrant && "
                       "invoke lab.up --backend vagrant`.")

    def destroy(self) -> None:
        check_tools()
        ensure_daemons()
        with self._lock():
            if self._machine_known():
                console.say(f"vagrant destroy: lab {self.settings.name!r} (domain "
                            f"{self.domain})")
                self._vagrant_streamed(["destroy", "--force"], timeout=300)
            if domain_state(self.domain) is not None:  # made by hand or Vagrant lost track
                console.say(f"removing libvirt domain {self.domain}")
                virsh_ok("destroy", self.domain)
                virsh_ok("undefine", self.domain, "--remove-all-storage")
        cleanup_after_destroy(self.settings)
        console.say(f"lab {self.settings.name!r} destroyed (Vagrant)")
