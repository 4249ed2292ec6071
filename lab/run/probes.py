"""Probe programs on their way into the guest: packing sources, build targets, loaders.

Sources live under bpf/ in the repository. They are sent to the guest as one tarball and
built there (against the running kernel's BTF) into a directory keyed by the sources'
content and the kernel, so unchanged probes are never rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from lab.errors import LabFailure, ProbeLoadError, ScenarioError
from lab.run.guest import DISK_FULL, GUEST_ROOT, GUEST_SRC, guest_disk_full
from lab.scenario.model import Probe
from lab.ssh import Session, drain

__all__ = ["GUEST_ROOT", "GUEST_SRC", "ProbeLoadError"]
GUEST_BUILD = "/var/cache/fentry-lab/build"
READY = re.compile(r"lab-loader: ready pid=(\d+)")
LAB_DIR = Path(__file__).resolve().parents[1]
SKIP_PARTS = {"build", "__pycache__", ".mypy_cache"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _safe_file(path: Path, project: Path) -> Path:
    """path itself, or refused when it is a symlink that leads out of the project."""
    real = path.resolve()
    if not real.is_relative_to(project.resolve()):
        raise ScenarioError(
            f"Refusing to upload {path}: it is a symlink to {real}, outside the project "
            f"({project}). Only files of the project go into the guest; replace the link "
            "with a copy of the file.")
    return real


def _quoted_includes(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return INCLUDE.findall(text)


def needed_files(bpf_dir: Path, probes: Sequence[Probe]) -> list[Path]:
    """What the probes need to build and load: the Makefile, the loader, each probe's
    directory, and every header their sources include by a relative path (transitively)."""
    wanted: list[Path] = []
    if (bpf_dir / "Makefile").exists():
        wanted.append(bpf_dir / "Makefile")
    dirs = {bpf_dir / "loader"} if any(p.loader == "libbpf" for p in probes) else set()
    dirs |= {(bpf_dir.parent / p.source).parent for p in probes}
    for directory in sorted(dirs):
        if directory.is_dir():
            wanted += sorted(p for p in directory.iterdir()
                             if (p.is_file() or p.is_symlink()) and p.name not in SKIP_PARTS)
    seen = {p.absolute() for p in wanted}
    queue = [p for p in wanted if p.suffix in (".c", ".h")]
    while queue:
        source = queue.pop()
        for name in _quoted_includes(source):
            header = Path(os.path.normpath(source.parent / name))
            if (header.absolute() not in seen and header.is_file()
                    and header.absolute().is_relative_to(bpf_dir.absolute())):
                seen.add(header.absolute())
                wanted.append(header)
                queue.append(header)
    return wanted


def pack_sources(bpf_dirs: Path | Sequence[Path], probes: Sequence[Probe] = ()) -> bytes:
    """A deterministic tarball of what the probes need plus the guest helper, mtimes zeroed.

    Several directories (the user's, then the shipped one) merge into one bpf/; a file in
    an earlier directory wins over the same path in a later one. Symlinks that lead out of
    the project are refused (ScenarioError naming the file).
    """
    found: dict[str, Path] = {}
    for bpf_dir in [bpf_dirs] if isinstance(bpf_dirs, Path) else bpf_dirs:
        for path in needed_files(bpf_dir, probes):
            name = f"bpf/{path.relative_to(bpf_dir)}"
            if name not in found:
                found[name] = _safe_file(path, bpf_dir.parent)
    members = sorted(found.items())
    # The guest helper: its modules, and the ELF reader it shares with the host.
    members += [(f"guest/{path.name}", path) for path in (LAB_DIR / "guest").glob("*.py")]
    members.append(("guest/elf.py", LAB_DIR / "elf.py"))
    members.sort()
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
    """What a build depends on: the probes' files (not the guest helper, which travels in
    the same tarball: changing it must not rebuild every probe), the kernel, the image."""
    h = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        for member in tar:
            data = tar.extractfile(member) if member.name.startswith("bpf/") else None
            if data is not None:
                h.update(f"{member.name}\0{member.mode:o}\0{member.size}\0".encode())
                h.update(data.read())
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


def upload_sources(ssh: Session, tarball: bytes, build_dir: str | None = None,
                   build_cache: Path | None = None) -> None:
    """Unpack the probe sources in the guest; in the same round trip, seed `build_dir` from
    the host's build cache (probes built earlier for the same sources and kernel) when the
    guest has no such directory yet."""
    script = (f"rm -rf {GUEST_SRC} && mkdir -p {GUEST_SRC} && "
              # exactly the sources' bytes: the build cache's tarball may follow them
              f"dd bs=64K iflag=fullblock,count_bytes count={len(tarball)} status=none"
              f" | tar -x -C {GUEST_SRC}")
    stdin = tarball
    if build_dir is not None and build_cache is not None and build_cache.exists():
        build_cache.touch()  # last used now: `image.prune` keeps builds used recently
        stdin += build_cache.read_bytes()
        # Unpacked aside and renamed, so a failed unpack never looks like a build.
        script += (f" && if [ -d {build_dir} ]; then cat >/dev/null; else "
                   f"rm -rf {build_dir}.part && mkdir -p {build_dir}.part && "
                   f"tar -x -C {build_dir}.part && mv {build_dir}.part {build_dir}; fi")
    result = ssh.run(script, stdin=stdin, timeout=60)
    if result.exit_status != 0:
        if DISK_FULL in result.err:
            raise guest_disk_full("Could not unpack the probe sources in the guest")
        raise LabFailure(f"Could not unpack the probe sources in the guest: {result.err}")


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
    cache.touch()
    return json.loads(cache.read_text())


BUILD_CACHE_DAYS = 30


def prune_builds(home: Path, max_age_days: float = BUILD_CACHE_DAYS,
                 now: float | None = None) -> list[Path]:
    """Remove the host's probe builds (builds/<key>.tar) and their BTF (btf/<key>/) that no
    run used for max_age_days: their keys hash sources and kernels, so no rule can tell
    which are still wanted, but a run touches what it uses. Returns what was removed."""
    cutoff = (time.time() if now is None else now) - max_age_days * 86400

    def unused(path: Path) -> bool:
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        return all(p.stat().st_mtime < cutoff for p in files)

    removed: list[Path] = []
    for directory in (home / "builds", home / "btf"):
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            if unused(path):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


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
        drain(self.channel, self.stdout, self.stderr)

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


def start_loader(ssh: Session, probes: tuple[Probe, ...], build_dir: str,
                 options: Mapping[str, Sequence[str]] | None = None) -> RunningLoader:
    """lab-loader for libbpf probes (with each object's -p/-s options before it), or a BCC
    script."""
    if probes[0].loader == "bcc":
        command = f"exec python3 {GUEST_SRC}/{probes[0].source}"
    else:
        args: list[str] = []
        for p in probes:
            args += [*(options or {}).get(p.name, ()), f"{object_stem(p)}.bpf.o"]
        command = f"cd {build_dir} && exec ./lab-loader {shlex.join(args)}"
    return RunningLoader(probes, command, ssh.open_channel(command))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(f"    {line}" for line in text.strip().splitlines()[-lines:])
