"""Typed client of the guest helper (lab/guest/fentry_lab_guest.py) and the static cache.

The helper runs in the guest, one process per run, reading a JSON request per line on
stdin and answering a JSON line on stdout. Its replies become the dataclasses below here,
in one place, so the runner and the matrix never index dicts by hand. Static artefacts
(objdump listings, `bpftrace -lv` output) depend only on the kernel, so they are cached
on the host by the kernel's build ID.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shlex
import shutil
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import paramiko

from lab.errors import LabError, LabFailure
from lab.image.build import Image
from lab.results.bundle import write_atomic
from lab.ssh import Session, read_line

GUEST_ROOT = "/opt/fentry-lab"
GUEST_SRC = f"{GUEST_ROOT}/src"
HELPER = f"{GUEST_SRC}/guest/fentry_lab_guest.py"
DISK_FULL = "No space left on device"


def guest_disk_full(what: str) -> LabFailure:
    return LabFailure(f"{what}: the guest's disk is full (No space left on device). A step "
                      "probably filled it. Fix: `invoke lab.destroy && invoke lab.up` for a "
                      "fresh lab (the image is unchanged), and keep steps' files small.")


@dataclass(frozen=True)
class KernelFacts:
    release: str
    version: tuple[int, ...]
    btf: bool
    build_id_running: str | None
    build_id_debug_vmlinux: str | None
    raw: Mapping[str, Any]  # everything the helper said, as written to kernel.json

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> KernelFacts:
        return cls(str(doc["release"]), tuple(int(v) for v in doc["version"]), bool(doc["btf"]),
                   doc.get("build_id_running"), doc.get("build_id_debug_vmlinux"), doc)


@dataclass(frozen=True)
class BuildReply:
    ok: bool
    log: str
    cached: bool | None  # None: nothing to build


@dataclass(frozen=True)
class Facts:
    """The `prepare` / `facts` reply: the kernel and what it offers for some functions."""

    kernel: KernelFacts
    traceable: Mapping[str, bool]
    in_kallsyms: Mapping[str, bool]
    live_before: Mapping[str, Any]
    objdump: Mapping[str, str] = field(default_factory=dict)
    bpftrace_lv: Mapping[str, str] = field(default_factory=dict)
    build: BuildReply = BuildReply(True, "", None)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Facts:
        build = doc.get("build") or {}
        return cls(KernelFacts.parse(doc["kernel"]), dict(doc["traceable"]),
                   dict(doc["in_kallsyms"]), dict(doc.get("live_before", {})),
                   dict(doc.get("objdump", {})), dict(doc.get("bpftrace_lv", {})),
                   BuildReply(bool(build.get("ok", True)), str(build.get("log", "")),
                              build.get("cached")))


@dataclass(frozen=True)
class LiveReply:
    """The `peek` / `finish` reply: live bytes per function, and the trace (finish only)."""

    live: Mapping[str, Any]
    trace: tuple[str, ...] = ()

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> LiveReply:
        return cls(dict(doc["live"]), tuple(str(line) for line in doc.get("trace", [])))


class GuestHelper:
    """One helper process in the guest for the whole run (its `serve` command) on its own
    SSH channel, started by the first call; every failure is a LabFailure. Close it (or use
    it as a context manager): closing its stdin ends it."""

    def __init__(self, ssh: Session, helper: str = HELPER) -> None:
        self.ssh = ssh
        self.helper = helper
        self._channel: paramiko.Channel | None = None
        self._pid = 0
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()  # one request at a time (a peek runs on a thread)

    def __enter__(self) -> GuestHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                channel.shutdown_write()
            channel.close()

    def call(self, command: str, request: Mapping[str, object], timeout: float) -> dict[str, Any]:
        with self._lock:
            line = self._exchange(command, request, timeout)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            self.close()
            raise LabFailure(f"The lab's guest helper answered {command} with something that "
                             f"is not JSON ({exc}): {line[:300]!r}") from None
        if isinstance(value, dict) and "error" in value:
            self._fail(command, str(value["error"]))
        reply = value.get("reply") if isinstance(value, dict) else None
        if not isinstance(reply, dict):
            raise LabFailure(f"The lab's guest helper answered {command} with {value!r:.300}.")
        return reply

    def _exchange(self, command: str, request: Mapping[str, object], timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        try:
            channel = self._started()
            channel.sendall(json.dumps({"command": command, "request": request}).encode()
                            + b"\n")
            while True:
                line = read_line(channel, self._out, self._err, deadline)
                if line is None:
                    self._stop()
                    raise LabFailure(f"The lab's guest helper failed ({command}, timed out "
                                     f"after {timeout:.0f} s): {self._stderr()}")
                if not self._pid and line.startswith(b'{"ready":'):
                    self._pid = int(json.loads(line)["ready"])
                    continue
                return line
        except EOFError:
            self.close()
            self._fail(command, self._stderr() or "it exited without an answer")
        except (OSError, paramiko.SSHException) as exc:
            self.close()
            raise LabFailure(f"The SSH connection to the lab failed while the guest helper "
                             f"ran {command}: {exc}. The VM may have stopped: see `invoke "
                             "lab.status` and `invoke lab.logs`.") from None

    def _started(self) -> paramiko.Channel:
        if self._channel is None:
            # -S: no site-packages (the helper is stdlib only), a faster start under TCG.
            command = f"exec python3 -S {shlex.quote(self.helper)} serve"
            self._channel = self.ssh.open_channel(command)
            self._pid, self._out[:], self._err[:] = 0, b"", b""
        return self._channel

    def _stop(self) -> None:
        """A request outlived its deadline: kill the helper and what it runs (an objdump,
        a build), not just its channel. sshd starts each command in a new session, and the
        helper is exec'd, so its pid is its process group."""
        if self._pid:
            with contextlib.suppress(LabError):
                self.ssh.run(["/bin/kill", "-s", "KILL", "--", f"-{self._pid}"], timeout=10)
        self.close()

    def _stderr(self) -> str:
        return self._err.decode("utf-8", "replace").strip()[-2000:]

    @staticmethod
    def _fail(command: str, err: str) -> NoReturn:
        if DISK_FULL in err:
            raise guest_disk_full(f"The guest helper failed ({command})")
        raise LabFailure(f"The lab's guest helper failed ({command}): {err[-2000:]}")

    def prepare(self, request: Mapping[str, object], timeout: float = 600) -> Facts:
        return self._facts("prepare", request, timeout)

    def facts(self, request: Mapping[str, object], timeout: float = 600) -> Facts:
        return self._facts("facts", request, timeout)

    def peek(self, live: Sequence[str], known: Mapping[str, Any] | None = None,
             timeout: float = 120) -> LiveReply:
        """Live bytes while attached; `known`: what an earlier peek found (known_functions)."""
        return self._live("peek", live, known, timeout)

    def finish(self, live: Sequence[str], known: Mapping[str, Any] | None = None,
               timeout: float = 120) -> LiveReply:
        return self._live("finish", live, known, timeout)

    def _facts(self, command: str, request: Mapping[str, object], timeout: float) -> Facts:
        doc = self.call(command, request, timeout)
        try:
            return Facts.parse(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise LabFailure(f"The lab's guest helper's {command} reply lacks {exc}: is the "
                             "guest helper from another version of fentry-lab?") from None

    def _live(self, command: str, live: Sequence[str], known: Mapping[str, Any] | None,
              timeout: float) -> LiveReply:
        doc = self.call(command, {"live": list(live), "known": dict(known or {})}, timeout)
        try:
            return LiveReply.parse(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise LabFailure(f"The lab's guest helper's {command} reply lacks {exc}.") from None


def known_functions(peeked: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """From a peek's reply, what stays true for the run (functions do not move): each
    function's address and end, and the return thunk. Passed to the next peek, it spares the
    guest a read of /proc/kallsyms (half a second under TCG)."""
    known = {}
    for fn, entry in peeked.items():
        if isinstance(entry, Mapping) and all(k in entry for k in ("address", "end", "thunk")):
            known[fn] = {k: entry[k] for k in ("address", "end", "thunk")}
    return known


@functools.cache
def helper_digest() -> str:
    source = Path(__file__).resolve().parent.parent / "guest" / "fentry_lab_guest.py"
    return hashlib.sha256(source.read_bytes()).hexdigest()[:12]


class StaticCache:
    """home/static/<kernel build id>-<helper digest>/{objdump,bpftrace-lv}-<function>.txt:
    what the kernel alone decides, as this version of the guest helper records it; and
    tools-<image>.json, the versions of the tools of one image build (fixed with it)."""

    KINDS = ("objdump", "bpftrace-lv")

    def __init__(self, home: Path, build_id: str) -> None:
        self.directory = home / "static" / f"{build_id}-{helper_digest()}"

    def path(self, kind: str, fn: str) -> Path:
        return self.directory / f"{kind}-{fn}.txt"

    def missing(self, kind: str, functions: Sequence[str]) -> list[str]:
        return [fn for fn in functions if not self.path(kind, fn).exists()]

    def store(self, facts: Facts) -> None:
        for kind, texts in (("objdump", facts.objdump), ("bpftrace-lv", facts.bpftrace_lv)):
            for fn, text in texts.items():
                write_atomic(self.path(kind, fn), text.encode())

    def tools_path(self, image: Image) -> Path:
        built = hashlib.sha256(str(image.manifest.get("built_at", "")).encode()).hexdigest()
        return self.directory / f"tools-{image.directory.name}-{built[:12]}.json"

    def tools(self, image: Image) -> dict[str, str] | None:
        """The recorded tool versions of this image build, or None."""
        try:
            value = json.loads(self.tools_path(image).read_text())
        except (OSError, ValueError):
            return None
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) \
            and value else None

    def store_tools(self, image: Image, tools: object) -> dict[str, str]:
        """Record what the guest said (a mapping of tool -> version line); returns it."""
        found = {str(k): str(v) for k, v in tools.items()} if isinstance(tools, dict) else {}
        if found:
            write_atomic(self.tools_path(image), json.dumps(found).encode())
        return found

    def read(self, kind: str, fn: str) -> str:
        path = self.path(kind, fn)
        return path.read_text() if path.exists() else f"# {kind} {fn}: not recorded\n"


def prune_static(home: Path, build_ids: Collection[str]) -> list[Path]:
    """Remove static records no cached image's kernel (build_ids) and no longer this helper
    would read; returns what was removed."""
    root = home / "static"
    wanted = {f"{build_id}-{helper_digest()}" for build_id in build_ids}
    removed = []
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if directory.is_dir() and directory.name not in wanted:
            shutil.rmtree(directory)
            removed.append(directory)
    return removed
