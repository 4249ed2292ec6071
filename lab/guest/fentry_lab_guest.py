#!/usr/bin/env python3
"""The lab's helper inside the guest (stdlib only; uploaded with the probes).

`serve` answers a run's requests (one JSON line each on stdin, one JSON line each on
stdout) from one process; each other subcommand answers one request, JSON on stdin, one JSON
document on stdout:

  prepare   preflight checks, kernel facts, probe build, static disassembly, bpftrace -lv,
            trace buffer cleared, live bytes "before"
  facts     the same facts for any functions, without building or clearing anything
  peek      live bytes of functions (while attached, after detaching)
  finish    live bytes "after" and the bpf_printk lines from the trace buffer
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elf import (  # type: ignore[import-not-found]
    build_id_from_elf,
    build_id_from_notes,
)
from kallsyms import Symbols, kallsyms_lookup  # type: ignore[import-not-found]
from later import Later  # type: ignore[import-not-found]
from live import peek  # type: ignore[import-not-found]

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs 40 ms of the helper's start under TCG; only for annotations
    from typing import Any

TRACING = Path("/sys/kernel/tracing")
CONFIG_FLAGS = ("CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER", "CONFIG_DYNAMIC_FTRACE",
                "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "CONFIG_BPF_JIT", "CONFIG_BPF_SYSCALL",
                "CONFIG_X86_KERNEL_IBT", "CONFIG_CALL_PADDING", "CONFIG_FPROBE",
                "CONFIG_MITIGATION_RETHUNK", "CONFIG_RETHUNK")


def kernel_version(release: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", release.split("-")[0])[:3]]


def kernel_facts(tools: bool = True) -> dict[str, object]:
    """The running kernel; with tools, the versions of the guest's tools too (the host
    caches those per image: asking clang alone takes 1.8 s in a just-restored guest)."""
    release = os.uname().release
    config: dict[str, str] = {}
    try:
        for line in Path(f"/boot/config-{release}").read_text().splitlines():
            key, _, value = line.partition("=")
            if key in CONFIG_FLAGS:
                config[key] = value
    except OSError:
        pass
    debug_vmlinux = Path(f"/usr/lib/debug/boot/vmlinux-{release}")
    running_id = build_id_from_notes(Path("/sys/kernel/notes").read_bytes())
    debug_id = build_id_from_elf(debug_vmlinux) if debug_vmlinux.exists() else None
    return {
        "uname": " ".join(os.uname()),
        "release": release,
        "version": kernel_version(release),
        "btf": Path("/sys/kernel/btf/vmlinux").exists(),
        # The kernel clears the flag when IBT is off (no CPU support, or ibt=off): a
        # config of y alone does not say endbr64 is enforced.
        "ibt_active": "ibt" in cpu_flags(),
        "config": {k: config.get(k, "n") for k in CONFIG_FLAGS},
        "build_id_running": running_id,
        "build_id_debug_vmlinux": debug_id,
        "debug_vmlinux": str(debug_vmlinux) if debug_vmlinux.exists() else None,
        "tools": tool_versions() if tools else {},
    }


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def tool_versions() -> dict[str, str]:
    """The tools' versions, asked at once (each start costs 0.1-0.6 s under TCG)."""
    argvs = {"bpftrace": ["bpftrace", "--version"], "bpftool": ["bpftool", "version"],
             "clang": ["clang", "--version"],
             "libbpf": ["dpkg-query", "-W", "-f", "libbpf ${Version}", "libbpf-dev"]}
    asked = {name: Later(tool_version, argv) for name, argv in argvs.items()}
    return {name: later.result() for name, later in asked.items()}


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0].strip() if out else "unknown"


def traceable(functions: list[str]) -> dict[str, bool]:
    wanted = set(functions)
    found: set[str] = set()
    with (TRACING / "available_filter_functions").open() as f:
        for line in f:
            name = line.split(" ", 1)[0].strip()
            if name in wanted:
                found.add(name)
    return {fn: fn in found for fn in functions}


def objdump_function(vmlinux: str, fn: str) -> str:
    out = subprocess.run(["objdump", "-d", f"--disassemble={fn}", vmlinux],
                         capture_output=True, text=True, check=False)
    lines = out.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.endswith(f"<{fn}>:")), None)
    if start is None:
        return f"# {fn}: not found in {vmlinux}\n{out.stderr}"
    body = []
    for line in lines[start:]:
        if not line.strip():
            break
        body.append(line)
    return f"# objdump -d --disassemble={fn} {vmlinux}\n" + "\n".join(body) + "\n"


def bpftrace_lv(fn: str) -> str:
    # bpftrace 0.20 renamed kfunc:/kretfunc: to fentry:/fexit: (older ones abort on those);
    # fexit: because bpftrace 0.27 lists retval (the return type) only there.
    version = kernel_version(tool_version(["bpftrace", "--version"]).replace("bpftrace v", ""))
    kind = "fexit" if version >= [0, 20] else "kfunc"
    out = subprocess.run(["bpftrace", "-lv", f"{kind}:{fn}"], capture_output=True, text=True,
                         check=False)
    return f"# bpftrace -lv '{kind}:{fn}'\n{out.stdout}{out.stderr}"


def build_probes(request: dict[str, Any]) -> dict[str, object]:
    targets = [str(t) for t in request.get("targets", [])]
    if not targets:
        return {"ok": True, "log": "", "cached": None}  # nothing to build (BCC compiles at load)
    out_dir = str(request["out"])
    missing = [t for t in targets if not Path(t).exists()]
    if not missing:
        return {"ok": True, "log": "", "cached": True}
    proc = subprocess.run(["make", "-s", "-C", str(request["src"]), f"O={out_dir}", *targets],
                          capture_output=True, text=True, check=False)
    return {"ok": proc.returncode == 0, "log": (proc.stdout + proc.stderr)[-20000:],
            "cached": False}


def prepare(request: dict[str, Any]) -> dict[str, object]:
    functions = [str(f) for f in request.get("functions", [])]
    symbols = Symbols().prefetch()  # kernel time: it runs beside the reads below
    listed = Later(traceable, functions)
    facts = kernel_facts(tools=bool(request.get("tools", True)))
    report: dict[str, object] = {"kernel": facts, "traceable": listed.result()}
    available = kallsyms_lookup(functions, symbols.text)
    report["in_kallsyms"] = {fn: fn in available for fn in functions}
    if request.get("preflight_only"):
        return report
    vmlinux = facts["debug_vmlinux"]
    build = Later(build_probes, request.get("build", {}), heavy=True)
    dumps = {fn: Later(objdump_function, str(vmlinux), fn, heavy=True)
             for fn in request.get("objdump", [])} if vmlinux else {}
    listings = {fn: Later(bpftrace_lv, fn, heavy=True) for fn in request.get("bpftrace", [])}
    if not request.get("keep_trace"):
        (TRACING / "trace").write_text("")  # start from an empty trace buffer
    report["live_before"] = peek([str(f) for f in request.get("live", [])], symbols)
    report["build"] = build.result()
    report["objdump"] = {fn: later.result() for fn, later in dumps.items()}
    report["bpftrace_lv"] = {fn: later.result() for fn, later in listings.items()}
    return report


def facts(request: dict[str, Any]) -> dict[str, object]:
    """What a kernel offers for some functions, for the kernel matrix; changes nothing.

    Kernel facts, and per function: in /proc/kallsyms, traceable, static disassembly,
    bpftrace -lv (its BTF signature) and the live bytes now.
    """
    return prepare({**request, "build": {}, "keep_trace": True})


def read_trace() -> list[str]:
    lines = (TRACING / "trace").read_text(errors="replace").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


COMMANDS = ("prepare", "facts", "peek", "finish")


def answer(command: str, request: dict[str, Any]) -> dict[str, object]:
    if command == "prepare":
        return prepare(request)
    if command == "facts":
        return facts(request)
    live = [str(f) for f in request.get("live", [])]
    # While attached, the entry calls a trampoline that only kallsyms names: read it now,
    # beside the objdumps. After detaching, read it only if something needs it.
    symbols = Symbols().prefetch() if command == "peek" and live else Symbols()
    result: dict[str, object] = {"live": peek(live, symbols, request.get("known"))}
    if command == "finish":
        result["trace"] = read_trace()
    return result


def os_error(exc: OSError) -> str:
    """One line for the host; a full disk is the usual cause, so look at the disk."""
    root = os.statvfs("/")
    full = root.f_bavail * root.f_frsize < (1 << 20)
    if full:
        return f"fentry-lab-guest: No space left on device (the root disk is full): {exc}"
    return f"fentry-lab-guest: {exc}"


def serve() -> int:
    """One helper for a whole run: a JSON request per line on stdin, a JSON reply per line
    on stdout, until stdin closes. Under TCG each Python start with its imports costs about
    0.4 s, so a run that asks three times pays it once."""
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            call = json.loads(line)
            command, request = str(call["command"]), dict(call.get("request") or {})
            if command not in COMMANDS:
                raise ValueError(f"unknown command {command!r}")
            reply: dict[str, object] = {"reply": answer(command, request)}
        except OSError as exc:
            reply = {"error": os_error(exc)}
        except Exception as exc:  # the host shows it: a helper bug must not hang the run
            reply = {"error": f"fentry-lab-guest: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    return 0


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "serve":
        return serve()
    if command not in COMMANDS:
        print(f"usage: {sys.argv[0]} serve | prepare|facts|peek|finish < request.json",
              file=sys.stderr)
        return 2
    json.dump(answer(command, json.loads(sys.stdin.read() or "{}")), sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as exc:
        print(os_error(exc), file=sys.stderr)
        sys.exit(3)
