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
import struct
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elf import (  # type: ignore[import-not-found]
    build_id_from_elf,
    build_id_from_notes,
)
from kallsyms import (  # type: ignore[import-not-found]
    Symbols,
    function_end,
    kallsyms_lookup,
    return_thunk,
    symbol_at,
    symbolize,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs 40 ms of the helper's start under TCG; only for annotations
    from typing import Any, Callable

TRACING = Path("/sys/kernel/tracing")
CONFIG_FLAGS = ("CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER", "CONFIG_DYNAMIC_FTRACE",
                "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "CONFIG_BPF_JIT", "CONFIG_BPF_SYSCALL",
                "CONFIG_X86_KERNEL_IBT", "CONFIG_CALL_PADDING", "CONFIG_FPROBE",
                "CONFIG_MITIGATION_RETHUNK", "CONFIG_RETHUNK")
PEEK_BYTES = 16


class Later:
    """A call run on its own thread (concurrent.futures would cost 60 ms of start-up under
    TCG); result() waits, then returns or raises what the call did. Heavy calls (a build,
    an objdump of vmlinux) take one of HEAVY's slots: the guest has 2 vCPUs."""

    HEAVY = threading.BoundedSemaphore(3)

    def __init__(self, func: Callable[..., Any], *args: Any, heavy: bool = False) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(func, args, heavy),
                                        daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], heavy: bool) -> None:
        try:
            if heavy:
                with self.HEAVY:
                    self._value = func(*args)
            else:
                self._value = func(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


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


def read_kcore(address: int, size: int) -> bytes:
    with open("/proc/kcore", "rb") as f:
        header = f.read(64)
        phoff, = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            ptype, _fl, offset, vaddr, _pa, filesz = struct.unpack_from("<IIQQQQ", table,
                                                                        i * phentsize)
            if ptype == 1 and vaddr <= address < vaddr + filesz:
                f.seek(offset + address - vaddr)
                return f.read(size)
    raise LookupError(f"address {address:#x} is in no /proc/kcore segment")


def disassemble(code: bytes, address: int) -> list[dict[str, object]]:
    # The bytes go to objdump in an anonymous memory file: no temporary file on the guest's
    # disk (a full disk cannot stop it, and no file of ours shows up in a user's traces).
    fd = os.memfd_create("fentry-lab-code")
    try:
        os.write(fd, code)
        out = subprocess.run(
            ["objdump", "-D", "-b", "binary", "-m", "i386:x86-64",
             f"--adjust-vma={address:#x}", f"/proc/self/fd/{fd}"],
            capture_output=True, text=True, check=True, pass_fds=(fd,)).stdout
    finally:
        os.close(fd)
    insns: list[dict[str, object]] = []
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)", line)
        if m:
            insns.append({"address": f"{int(m.group(1), 16):#x}", "bytes": m.group(2).strip(),
                          "text": re.sub(r"\s+", " ", m.group(3)).strip()})
        elif insns and re.match(r"\s*[0-9a-f]+:\t[0-9a-f ]+$", line):
            extra = line.split("\t")[1].strip()  # continuation of a long instruction
            insns[-1]["bytes"] = f"{insns[-1]['bytes']} {extra}"
    return insns


def peek(functions: list[str], symbols: Symbols,
         known: dict[str, Any] | None = None) -> dict[str, object]:
    """The live entry bytes of each function, the call its entry makes (a BPF trampoline,
    read and disassembled too) and its live return instructions.

    `known` carries what an earlier peek of this run found per function (address, end,
    return thunk): functions do not move, so kallsyms is then read only to name a call.
    """
    known = known or {}
    hints = {fn: known[fn] for fn in functions if isinstance(known.get(fn), dict)
             and "address" in known[fn] and "end" in known[fn] and "thunk" in known[fn]}
    unknown = [fn for fn in functions if fn not in hints]
    found = kallsyms_lookup(unknown, symbols.text) if unknown else {}
    addresses = {fn: int(hints[fn]["address"], 16) if fn in hints else found[fn]
                 for fn in functions if fn in hints or fn in found}
    result: dict[str, object] = {}
    calls: dict[str, int] = {}
    # The returns are read beside the entries.
    returns = {fn: Later(_guarded, _returns_of, fn, addr, hints.get(fn), symbols)
               for fn, addr in addresses.items()}
    for fn in functions:
        if fn not in addresses:
            result[fn] = {"error": "not in /proc/kallsyms"}
            continue
        addr = addresses[fn]
        code = read_kcore(addr, PEEK_BYTES)
        insns = disassemble(code, addr)
        result[fn] = {"address": f"{addr:#x}", "bytes": code.hex(" "),
                      "instructions": insns}
        # A 5-byte call or jmp (e8/e9 rel32; 7.x kernels patch a jmp): name its target.
        for insn in insns:
            raw = bytes.fromhex(str(insn["bytes"]).replace(" ", ""))
            if len(raw) == 5 and raw[0] in (0xE8, 0xE9):
                at = int(str(insn["address"]), 16)
                calls[fn] = at + 5 + struct.unpack("<i", raw[1:])[0]
    if calls:
        names = symbolize(list(calls.values()), symbols.text)
        for fn, target in calls.items():
            entry = result[fn]
            assert isinstance(entry, dict)
            entry["call_target"] = {"address": f"{target:#x}", "symbol": names.get(target)}
            if str(names.get(target, "")).startswith("bpf_trampoline_"):
                entry["trampoline"] = _guarded(read_trampoline, target, addresses,
                                               symbols.text)
    for fn, later in returns.items():
        entry = result[fn]
        assert isinstance(entry, dict)
        reply = later.result()
        if isinstance(reply, dict):  # _guarded's {"error": ...}
            entry["returns"] = reply
            continue
        entry["returns"], end, thunk = reply
        entry["end"] = f"{end:#x}"
        entry["thunk"] = f"{thunk:#x}" if thunk is not None else None
    return result


def _returns_of(fn: str, address: int, hint: dict[str, Any] | None,
                symbols: Symbols) -> tuple[list[dict[str, object]], int, int | None]:
    """(return instructions, function end, return thunk), the last two from the hint."""
    if hint is not None:
        end = int(hint["end"], 16)
        thunk = int(hint["thunk"], 16) if hint["thunk"] else None
    else:
        end, thunk = function_end(address, symbols.text), return_thunk(symbols.text)
    return return_instructions(address, end, thunk), end, thunk


# --- report data: the trampoline a patched entry calls, and a function's returns -------

TRAMPOLINE_BYTES = 768  # an fentry+fexit trampoline is a few hundred bytes


def _guarded(func: Any, *args: Any) -> Any:
    """Extra report data must never fail a run: an error becomes {"error": ...}."""
    try:
        return func(*args)
    except (OSError, LookupError, ValueError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _call_targets(insns: list[dict[str, object]]) -> dict[int, int]:
    """Instruction address -> target of each direct call/jmp (e8/e9 rel32)."""
    targets: dict[int, int] = {}
    for insn in insns:
        raw = bytes.fromhex(str(insn["bytes"]).replace(" ", ""))
        if len(raw) == 5 and raw[0] in (0xE8, 0xE9):
            at = int(str(insn["address"]), 16)
            targets[at] = at + 5 + struct.unpack("<i", raw[1:])[0]
    return targets


def _name_targets(targets: list[int], functions: dict[str, int], text: str) -> dict[int, str]:
    """Exact kallsyms names; a target inside a peeked function is that function+off
    (the trampoline calls the original body past the patched entry)."""
    named: dict[int, str] = {}
    for target in targets:
        name = symbol_at(text, target)
        if name:
            named[target] = name
            continue
        for fn, start in functions.items():
            if 0 < target - start < 4096:
                named[target] = f"{fn}+{target - start:#x}"
    return named


def read_trampoline(address: int, functions: dict[str, int], ksyms: str) -> dict[str, object]:
    code = read_kcore(address, TRAMPOLINE_BYTES)
    insns = disassemble(code, address)
    for i, insn in enumerate(insns):  # the trampoline ends at its first return
        text = str(insn["text"])
        if text.startswith("ret") or text.startswith("int3"):
            insns = insns[:i + 1]
            break
    targets = _call_targets(insns)
    names = _name_targets(sorted(set(targets.values())), functions, ksyms)
    thunk = return_thunk(ksyms)
    for insn in insns:
        target = targets.get(int(str(insn["address"]), 16))
        if target is not None:
            insn["target"] = f"{target:#x}"
            insn["symbol"] = names.get(target) or (
                "__x86_return_thunk" if target == thunk else None)
    used = sum(len(str(i["bytes"]).split()) for i in insns)
    return {"address": f"{address:#x}", "bytes": code[:used].hex(" "), "instructions": insns}


def return_instructions(address: int, end: int,
                        thunk: int | None) -> list[dict[str, object]]:
    """The function's live return instructions: `ret`, or `jmp __x86_return_thunk`."""
    size = min(max(end - address, 16), 8192)
    insns = disassemble(read_kcore(address, size), address)
    targets = _call_targets(insns)
    found = []
    for insn in insns:
        at = int(str(insn["address"]), 16)
        text = str(insn["text"])
        if text.startswith("ret") or (text.startswith("jmp") and thunk is not None
                                      and targets.get(at) == thunk):
            found.append({**insn, "offset": f"{at - address:#x}"})
    return found


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
