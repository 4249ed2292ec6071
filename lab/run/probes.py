"""Probe programs on their way into the guest: packing sources, build targets, loaders.

Sources live under bpf/ in the repository. They are sent to the guest as one tarball and
built there (against the running kernel's BTF) into a directory keyed by the sources'
content and the kernel, so unchanged probes are never rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from lab.errors import LabError
from lab.scenario.model import Probe
from lab.ssh import Session

GUEST_ROOT = "/opt/fentry-lab"
GUEST_SRC = f"{GUEST_ROOT}/src"
GUEST_BUILD = "/var/cache/fentry-lab/build"
READY = re.compile(r"lab-loader: ready pid=(\d+)")
LAB_DIR = Path(__file__).resolve().parents[1]
SKIP_PARTS = {"build", "__pycache__", ".mypy_cache"}


def pack_sources(bpf_dir: Path) -> bytes:
    """A deterministic tarball: bpf/ plus the guest helper, mtimes zeroed, sorted."""
    members: list[tuple[str, Path]] = []
    for path in sorted(bpf_dir.rglob("*")):
        rel = path.relative_to(bpf_dir)
        if path.is_file() and not SKIP_PARTS & set(rel.parts):
            members.append((f"bpf/{rel}", path))
    members.append(("guest/fentry_lab_guest.py", LAB_DIR / "guest" / "fentry_lab_guest.py"))
    members.append(("guest/elf.py", LAB_DIR / "elf.py"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in members:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_key(tarball: bytes, kernel_release: str, image_digest: str) -> str:
    h = hashlib.sha256(tarball)
    h.update(kernel_release.encode())
    h.update(image_digest.encode())
    return h.hexdigest()[:16]


def object_stem(probe: Probe) -> str:
    """bpf/acl/fentry.bpf.c -> acl/fentry; bpf/tools/probe.c -> tools/probe"""
    source = probe.source.removeprefix("bpf/")
    return source.removesuffix(".bpf.c") if source.endswith(".bpf.c") else \
        source.removesuffix(".c")


def build_targets(probes: Sequence[Probe], out: str) -> list[str]:
    targets = []
    libbpf = [p for p in probes if p.loader == "libbpf"]
    if libbpf:
        targets.append(f"{out}/lab-loader")
    for probe in libbpf:
        stem = object_stem(probe)
        targets += [f"{out}/{stem}.bpf.o", f"{out}/{stem}.btf.json"]
    return targets


def upload_sources(ssh: Session, tarball: bytes) -> None:
    result = ssh.run(f"rm -rf {GUEST_SRC} && mkdir -p {GUEST_SRC} && tar -x -C {GUEST_SRC}",
                     stdin=tarball, timeout=60)
    if result.exit_status != 0:
        raise LabError(f"Could not unpack the probe sources in the guest: {result.err}", code=2)


def restore_build(ssh: Session, build_dir: str, cache: Path) -> None:
    """Seed a fresh lab with probes built earlier for the same sources and kernel."""
    if cache.exists():
        ssh.run(f"[ -d {build_dir} ] || {{ mkdir -p {build_dir} && tar -x -C {build_dir}; }}",
                stdin=cache.read_bytes(), timeout=60)


def save_build(ssh: Session, build_dir: str, cache: Path) -> None:
    """Keep what the guest built (not the 3 MB vmlinux.h, which the build no longer needs)."""
    if cache.exists():
        return
    result = ssh.run(["tar", "-c", "--exclude=./vmlinux.h", "-C", build_dir, "."], timeout=60)
    if result.exit_status == 0 and not result.stdout_dropped:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part")
        tmp.write_bytes(result.stdout)
        tmp.rename(cache)


def fetch_btf(ssh: Session, remote: str, cache: Path) -> object:
    """The BTF (bpftool JSON) of a built object, cached on the host by its build key."""
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part")
        ssh.get(remote, tmp)
        tmp.rename(cache)
    return json.loads(cache.read_text())


@dataclass
class RunningLoader:
    """A loader process in the guest (lab-loader or a BCC script) on its own channel."""

    probes: tuple[Probe, ...]
    command: str
    channel: paramiko.Channel
    pid: int = 0
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def pump(self) -> None:
        while self.channel.recv_ready():
            self.stdout += self.channel.recv(65536)
        while self.channel.recv_stderr_ready():
            self.stderr += self.channel.recv_stderr(65536)

    @property
    def log(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            found = READY.search(self.log)
            if found:
                self.pid = int(found.group(1))
                return
            if self.channel.exit_status_ready():
                self.pump()
                status = self.channel.recv_exit_status()
                raise ProbeLoadError(
                    f"The probe loader `{self.command}` exited with status {status} before "
                    f"attaching. Its log (libbpf and the verifier) is in loader.log:\n"
                    f"{_tail(self.log)}")
            time.sleep(0.05)
        raise ProbeLoadError(f"The probe loader `{self.command}` did not attach within "
                             f"{timeout:.0f} s. Its log so far:\n{_tail(self.log)}")

    def stop(self, ssh: Session, timeout: float) -> None:
        """Close stdin (the loader drains its buffers and detaches); kill it if it lingers."""
        if not self.channel.closed:
            self.channel.shutdown_write()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.channel.exit_status_ready():
            self.pump()
            time.sleep(0.05)
        if not self.channel.exit_status_ready() and self.pid:
            ssh.run(["kill", "-KILL", str(self.pid)], timeout=10)
        self.pump()
        self.channel.close()


class ProbeLoadError(Exception):
    """The probe did not load or attach (verifier, missing function, bad program)."""


def start_loader(ssh: Session, probes: tuple[Probe, ...], build_dir: str) -> RunningLoader:
    if probes[0].loader == "bcc":
        command = f"exec python3 {GUEST_SRC}/{probes[0].source}"
    else:
        objects = " ".join(f"{object_stem(p)}.bpf.o" for p in probes)
        command = f"cd {build_dir} && exec ./lab-loader {objects}"
    return RunningLoader(probes, command, ssh.open_channel(command))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(f"    {line}" for line in text.strip().splitlines()[-lines:])
