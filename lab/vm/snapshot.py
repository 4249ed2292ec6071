"""Ready snapshots: save a booted lab's memory and disk once, start new labs from them.

A snapshot (its files, key and checks: lab.vm.snapshot_store) is the lab's disk overlay as it
was at save time, QEMU's migration stream compressed with zstd and a manifest. It is
made in a temporary directory and renamed into place when complete, so an interrupted or
failed save never leaves one that looks valid. A restored lab runs on a throwaway overlay
on top of disk.qcow2, so its disk is exactly the one the saved memory expects.

Measured choice (QEMU 7.2, TCG, 2 GiB guest): a migration file is 61 MiB with zstd -1 and
takes 1.6 s; an internal savevm keeps ~230 MiB uncompressed inside a qcow2 that cannot be
written atomically. Both need every device to be migratable: QEMU's NVMe controller is not,
so a lab that uses snapshots boots from virtio-blk with the image's initrd.

What a restored guest gets fresh: its boot ID (swapped in the migration stream, every copy in
RAM), its kernel RNG (a new VM generation ID makes the kernel reseed as it resumes, then 64
bytes of host entropy are credited with RNDADDENTROPY and RNDRESEEDCRNG), its clock (from the
host, ~0.1-0.3 s behind). What stays the snapshot's: state already drawn from the RNG before
the save (kernel hash and TCP secrets, KASLR, canaries and PRNGs of running processes, the
first SSH connection's guest-side key exchange), machine-id and SSH host keys (per image
anyway, and pinned), the guest's monotonic clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from lab import console
from lab.errors import LabError
from lab.image.build import Image
from lab.ssh import Session, SshTarget
from lab.vm.accel import Accel
from lab.vm.qmp import qmp_command
from lab.vm.snapshot_store import (
    DISK,
    FORMAT,
    MANIFEST,
    MARKER,
    SERIAL,
    STATE,
    LabVm,
    boot_id_of,
    directory_for,
    find,
    key_for,
    problem_with,
    remove,
    sha256_of,
    snapshots_dir,
)

# The migratable shape: virtio-blk root (modules in the initrd), stable eth0 name, and a
# VM generation ID device whose change on every restore makes the guest kernel reseed its RNG.
BOOT = {"root_device": "/dev/vda", "disk_interface": "virtio", "initrd": "yes"}
KERNEL_ARGS = "net.ifnames=0"
EXTRA_ARGV = ["-device", "vmgenid,guid=auto"]
SAVE_TIMEOUT_S = 120.0
RESTORE_TIMEOUT_S = 60.0

# Replaces the snapshot's boot ID (binary, hex and text forms: same lengths, so the stream's
# framing is untouched) with a new one in the migration stream on its way into QEMU.
FILTER = r"""
import sys
pairs = [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]
keep = max(len(a) for a, _ in pairs) - 1
src, dst, carry = sys.stdin.buffer, sys.stdout.buffer, b""
while True:
    chunk = src.read(1 << 20)
    buf = carry + chunk
    for a, b in pairs:
        buf = buf.replace(a, b)
    if not chunk:
        dst.write(buf)
        break
    dst.write(buf[:-keep])
    carry = buf[-keep:]
dst.flush()
"""


def enabled() -> bool:
    return os.environ.get("FENTRY_LAB_SNAPSHOTS", "on").lower() not in ("0", "off", "no")


def lab_image(image: Image) -> Image:
    """The image as a snapshot-capable lab boots it (unchanged when snapshots are off)."""
    if not enabled():
        return image
    boot = dict(image.boot)
    boot.update(BOOT)
    return Image(image.directory, {**image.manifest.raw, "boot": boot})


def kernel_args(user_args: str) -> str:
    return f"{KERNEL_ARGS} {user_args}".strip() if enabled() else user_args


def extra_argv() -> list[str]:
    return list(EXTRA_ARGV) if enabled() else []


# -- save ----------------------------------------------------------------------------------


def _cmd(socket_path: Path, name: str, timeout: float = 10.0,
         **args: object) -> dict[str, object]:
    """One QMP command on its own connection (lab.vm.qmp); QmpError on failure."""
    return qmp_command(socket_path, name, timeout, **args)


def save(lab: LabVm, image: Image, accel: Accel, target: SshTarget) -> None:
    """Save the freshly booted lab as its key's snapshot, unless one exists already.

    The lab pauses for the save (about 2 s) and then runs on. Any failure (disk full,
    Ctrl-C, QEMU refusing) leaves no snapshot and the lab running; only a notice is printed.
    """
    if not enabled():
        return
    key = key_for(lab, image, accel)
    final = directory_for(lab.settings, key)
    if final.is_dir() and not problem_with(final, key, check_sums=False):
        return
    root = snapshots_dir(lab.settings)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    temp = root / f".tmp-{final.name}-{os.getpid()}"
    remove(temp)
    temp.mkdir()
    started = time.monotonic()
    try:
        with Session(target) as ssh:  # what the restored labs will have to replace
            boot_id = ssh.run("sync; cat /proc/sys/kernel/random/boot_id", timeout=30).out.strip()
        _migrate_to(lab, temp)
        manifest = {
            "format": FORMAT, "key": asdict(key), "boot_id": boot_id,
            "created_at": time.time(), "save_seconds": round(time.monotonic() - started, 2),
            "files": {name: {"size": (temp / name).stat().st_size,
                             "sha256": sha256_of(temp / name)} for name in (DISK, STATE)},
        }
        _write_durably(temp / MANIFEST, json.dumps(manifest, indent=2).encode())
        remove(final)
        os.rename(temp, final)
        console.say(f"saved ready snapshot {final.name} in {time.monotonic() - started:.1f} s "
                    f"({(final / STATE).stat().st_size >> 20} MiB): the next labs start "
                    "from it")
    except OSError as exc:
        console.warn(f"Could not save a ready snapshot ({exc.strerror or exc}); the lab is "
                     f"fine, the next one boots cold. Free space under {root} to get one.")
    except LabError as exc:
        console.warn(f"Could not save a ready snapshot: {exc}. The lab is fine; the next one "
                     "boots cold.")
    finally:
        remove(temp)


def _remove_stale_temporaries(root: Path) -> None:
    for temp in root.glob(".tmp-*"):
        pid = temp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove(temp)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _migrate_to(lab: LabVm, temp: Path) -> None:
    """Pause, stream the VM state through zstd, copy the overlay, resume (always)."""
    state = temp / STATE
    uri = f"exec:zstd -q -1 -T2 -o {shlex.quote(str(state))}"
    try:
        qmp = lab.qmp_socket
        _cmd(qmp, "stop")
        done = False
        try:
            _cmd(qmp, "migrate", uri=uri)
            deadline = time.monotonic() + SAVE_TIMEOUT_S
            while True:
                info = _cmd(qmp, "query-migrate")
                if info.get("status") == "completed":
                    done = True
                    break
                if info.get("status") in ("failed", "cancelled"):
                    raise LabError(f"QEMU's migration failed: "
                                   f"{info.get('error-desc', 'no reason given')} (is the "
                                   "disk full?)")
                if time.monotonic() > deadline:
                    _cmd(qmp, "migrate_cancel")
                    raise LabError("QEMU's migration did not finish in time")
                time.sleep(0.05)
            # After a completed migration QEMU has flushed and let go of the disk.
            shutil.copyfile(lab.overlay, temp / DISK)
            with contextlib.suppress(OSError):  # the boot's console, for lab.logs after a restore
                shutil.copyfile(lab.directory / "serial.log", temp / SERIAL)
            with (temp / DISK).open("rb+") as f:
                os.fsync(f.fileno())
            with state.open("rb") as f:
                os.fsync(f.fileno())
        finally:  # on Ctrl-C too: the lab must not stay paused
            if not done:
                with contextlib.suppress(Exception):
                    _cmd(qmp, "migrate_cancel")
                    time.sleep(0.2)
            _cmd(qmp, "cont")
    except LabError:
        raise
    except OSError:
        raise
    except Exception as exc:  # QMP's own errors
        raise LabError(f"QMP failed while saving ({exc})") from None


# -- restore -------------------------------------------------------------------------------


def choose(lab: LabVm, image: Image, accel: Accel) -> Path | None:
    """The snapshot to start this lab from, or None for a cold boot.

    Only a lab without a disk of its own is restored (a new, destroyed or reset lab): a lab
    that was powered off keeps its disk and boots cold on it.
    """
    if not enabled():
        return None
    marker = lab.directory / MARKER
    if lab.overlay.exists() and marker.exists():
        base = Path(marker.read_text().strip()) / DISK
        if not base.exists():  # the snapshot under this disk was remade: start afresh
            console.say("the snapshot under this lab's disk is gone: starting from a new one")
            lab.overlay.unlink()
    if lab.overlay.exists():
        return None
    marker.unlink(missing_ok=True)
    return find(lab, key_for(lab, image, accel))


def prepare_overlay(lab: LabVm, snapshot: Path) -> None:
    """A throwaway overlay on the snapshot's disk: exactly the disk the memory expects."""
    lab.directory.mkdir(parents=True, exist_ok=True)
    lab.overlay.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(snapshot / DISK), str(lab.overlay)], check=True, capture_output=True)
    (lab.directory / MARKER).write_text(f"{snapshot}\n")


def new_boot_id() -> uuid.UUID:
    return uuid.uuid4()  # version 4 and variant bits set, as the kernel's own


def incoming_argv(snapshot: Path, new: uuid.UUID) -> list[str]:
    """-incoming that streams the saved state into QEMU, swapping in a new boot ID."""
    pipeline = f"zstd -dcq {shlex.quote(str(snapshot / STATE))}"
    old = boot_id_of(snapshot)
    with contextlib.suppress(ValueError):
        was = uuid.UUID(old)
        pairs = [(was.bytes, new.bytes), (was.hex.encode(), new.hex.encode()),
                 (str(was).encode(), str(new).encode())]
        args = " ".join(f"{a.hex()} {b.hex()}" for a, b in pairs)
        pipeline += f" | {shlex.quote(sys.executable)} -c {shlex.quote(FILTER)} {args}"
    return ["-incoming", f"exec:{pipeline}"]


def wait_restored(lab: LabVm, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until QEMU has loaded the state, then let the guest run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = lab.qemu_log.read_text(errors="replace").strip()[-800:]
            raise LabError(f"qemu exited with status {proc.returncode} while loading the "
                           f"snapshot: {said or '(nothing)'}")
        with contextlib.suppress(Exception):
            qmp = lab.qmp_socket
            while time.monotonic() < deadline and proc.poll() is None:
                status = _cmd(qmp, "query-status", 5.0).get("status")
                if status == "paused":
                    _cmd(qmp, "cont")
                    return
                if status == "running":
                    return
                time.sleep(0.05)
        time.sleep(0.05)
    raise LabError(f"qemu did not load the snapshot within {timeout:.0f} s")


FIXUP = r"""
import fcntl, os, struct, sys, time
host, seed, want = float(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3].strip("-")
time.clock_settime(time.CLOCK_REALTIME, host + float(sys.argv[4]))
fd = os.open("/dev/urandom", os.O_WRONLY)
fcntl.ioctl(fd, 0x40085203, struct.pack("ii", len(seed) * 8, len(seed)) + seed)  # RNDADDENTROPY
fcntl.ioctl(fd, 0x5207)  # RNDRESEEDCRNG
os.close(fd)
got = open("/proc/sys/kernel/random/boot_id").read().strip()
print(got, "ok" if not want or got == want else "kept")
"""


def fix_guest(target: SshTarget, boot_id: uuid.UUID | None) -> None:
    """Right after a restore: the clock from the host, fresh host entropy, boot ID check."""
    with Session(target) as ssh:
        seed = os.urandom(64).hex()
        want = str(boot_id) if boot_id else ""
        # The guest's clock lands behind the host's by the time the command takes to start
        # (about 0.1-0.3 s under TCG); a second round trip to correct it would cost more.
        result = ssh.run(["python3", "-S", "-c", FIXUP, f"{time.time():.6f}", seed, want or "-",
                          "0.1"], timeout=30)
    if result.exit_status != 0:
        raise LabError(f"Could not set the restored guest's clock and RNG: "
                       f"{result.err.strip()[-500:]}")
    if result.out.split()[-1:] == ["kept"]:
        console.warn("the restored guest kept the snapshot's boot ID (it could not be "
                     "replaced in the saved memory)")


def serial_seed(snapshot: Path) -> bytes:
    """How a restored lab's serial log starts: the snapshot's boot console, then a line
    saying so (qemu appends the restored guest's console after it)."""
    try:
        boot = (snapshot / SERIAL).read_bytes() if (snapshot / SERIAL).exists() else b""
    except OSError:
        boot = b""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return boot + (f"fentry-lab: ready (restored from snapshot {snapshot.name} at {stamp}; "
                   "any lines above are the boot it was taken from)\n").encode()
