"""Users' own programs in a run: requirements beyond functions, tools with their own
loaders (bpftrace, any command), globals and program choice for lab-loader, and what
their objects' buffers, maps and output hold afterwards.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

from lab import console
from lab.errors import LabError, ProbeLoadError
from lab.results.bundle import ResultsBundle
from lab.run import knobs
from lab.run.decode import Decoded, ObjectTypes, decode_lines
from lab.run.dwarf import OwnStruct, record_types
from lab.run.events import BtfError, TypeTable
from lab.run.probes import GUEST_SRC, RunningLoader, fetch_btf, object_stem
from lab.run.tools import RunningTool, start_tool
from lab.scenario.model import Probe, Requires
from lab.ssh import Session

TOOL_LOADERS = ("bpftrace", "command")
# One guest command checks tracepoints, kfuncs (names in the kernel's BTF) and ksyms.
_REQUIREMENTS = r"""
import json, os, re, sys
want = json.load(sys.stdin)
missing = []
for tp in want.get("tracepoints", []):
    cat, _, name = tp.partition(":")
    if not os.path.isdir(f"/sys/kernel/tracing/events/{cat}/{name}"):
        missing.append(f"tracepoint {tp} (not in /sys/kernel/tracing/events)")
if want.get("kfuncs"):
    btf = open("/sys/kernel/btf/vmlinux", "rb").read()
    for fn in want["kfuncs"]:
        if b"\0" + fn.encode() + b"\0" not in btf:
            missing.append(f"kfunc {fn} (not in the kernel's BTF)")
if want.get("ksyms"):
    syms = open("/proc/kallsyms").read()
    for sym in want["ksyms"]:
        if not re.search(rf" {re.escape(sym)}(\t|$)", syms, re.M):
            missing.append(f"ksym {sym} (not in /proc/kallsyms)")
print(json.dumps(missing))
"""


def requirement_problems(ssh: Session, requires: Requires, release: str) -> list[str]:
    """What the kernel lacks of `requires.tracepoints/kfuncs/ksyms`, named with the kernel."""
    wanted = {"tracepoints": list(requires.tracepoints), "kfuncs": list(requires.kfuncs),
              "ksyms": list(requires.ksyms)}
    if not any(wanted.values()):
        return []
    result = ssh.run(["python3", "-c", _REQUIREMENTS], stdin=json.dumps(wanted).encode(),
                     timeout=120)
    try:
        missing = json.loads(result.out)
    except json.JSONDecodeError:
        raise LabError(f"Checking the scenario's requirements failed in the guest: "
                       f"{result.err.strip()[-1000:]}", code=2) from None
    return [f"kernel {release} has no {what}" for what in missing]


def build_tools(ssh: Session, probes: Sequence[Probe], slowdown: float,
                bundle: ResultsBundle) -> None:
    """Run each command probe's `build` in the guest, from the sources' root."""
    for probe in probes:
        if probe.loader != "command" or not probe.build:
            continue
        argv = shlex.join(probe.build)
        result = ssh.run(f"cd {GUEST_SRC} && {argv}", timeout=600 * slowdown)
        bundle.write_text(f"build-{probe.name}.log", result.out + result.err)
        if result.exit_status != 0 or result.timed_out:
            raise ProbeLoadError(
                f"Probe {probe.name!r}: its build `{argv}` failed in the guest (exit "
                f"{result.exit_status}); see build-{probe.name}.log:\n"
                f"{(result.err or result.out).strip()[-2000:]}")


def _btf_cache(home: Path, build_dir: str) -> Path:
    return home / "btf" / build_dir.rsplit("/", 1)[-1]


def object_btf(ssh: Session, probe: Probe, build_dir: str, home: Path) -> TypeTable | None:
    stem = object_stem(probe)
    try:
        return TypeTable(fetch_btf(ssh, f"{build_dir}/{stem}.btf.json",
                                   _btf_cache(home, build_dir) /
                                   f"{stem.replace('/', '_')}.btf.json"))
    except (BtfError, OSError, paramiko.SSHException, ValueError) as exc:
        console.warn(f"probe {probe.name}: no BTF for its object ({exc})")
        return None


def loader_options(ssh: Session, probes: Sequence[Probe], build_dir: str,
                   home: Path) -> dict[str, list[str]]:
    """lab-loader's -p (programs to attach) and -s (globals) for each libbpf probe."""
    options: dict[str, list[str]] = {}
    for probe in probes:
        if probe.loader != "libbpf":
            continue
        args = [arg for prog in probe.attach for arg in ("-p", prog)]
        if probe.globals:
            btf = object_btf(ssh, probe, build_dir, home)
            if btf is None:
                raise ProbeLoadError(f"Probe {probe.name!r}: `globals` needs the object's "
                                     "BTF, which the build did not produce.")
            args += knobs.loader_args(btf, dict(probe.globals), probe.name)
        options[probe.name] = args
    return options


def start_tools(ssh: Session, probes: Sequence[Probe], slowdown: float) -> list[RunningTool]:
    """Start each bpftrace/command probe and wait until its programs are loaded."""
    tools: list[RunningTool] = []
    try:
        for probe in probes:
            if probe.loader not in TOOL_LOADERS:
                continue
            tool = start_tool(ssh, probe.name, probe.tool_argv(), GUEST_SRC)
            tools.append(tool)
            tool.wait_attached(ssh, timeout=probe.ready_timeout * slowdown,
                               settle=1.0 * slowdown)
    except BaseException:
        stop_tools(ssh, tools, slowdown)
        raise
    return tools


def stop_tools(ssh: Session, tools: Sequence[RunningTool], slowdown: float) -> list[str]:
    """SIGINT each tool's process group; the ids of programs still loaded after, if any."""
    left: list[str] = []
    for tool in tools:
        try:
            left += tool.stop(ssh, grace=10.0 * slowdown)
        except (LabError, OSError, paramiko.SSHException, EOFError) as exc:
            console.warn(f"probe {tool.probe_name}: could not stop it cleanly ({exc})")
    if left:
        console.warn(f"BPF programs {', '.join(left)} are still loaded after the tools "
                     "stopped: `invoke lab.reset` (or lab.destroy) clears them")
    return left


def _dwarf_source(ssh: Session, probe: Probe, build_dir: str,
                  home: Path) -> Callable[[], tuple[list[OwnStruct], TypeTable]]:
    """Fetch the object once and read its DWARF (a couple of seconds), cached as JSON."""
    stem = object_stem(probe)
    cache = _btf_cache(home, build_dir) / f"{stem.replace('/', '_')}.dwarf.json"

    def read() -> tuple[list[OwnStruct], TypeTable]:
        try:
            return _read_dwarf(ssh, f"{build_dir}/{stem}.bpf.o", cache)
        except (LabError, OSError, paramiko.SSHException, ValueError, KeyError) as exc:
            console.warn(f"probe {probe.name}: no record types from its DWARF ({exc})")
            return [], TypeTable({"types": []})

    return read


def _read_dwarf(ssh: Session, remote: str, cache: Path) -> tuple[list[OwnStruct], TypeTable]:
    if not cache.exists():
        local = cache.with_suffix(".o")
        cache.parent.mkdir(parents=True, exist_ok=True)
        ssh.get(remote, local)
        own, table = record_types(local)
        local.unlink(missing_ok=True)
        cache.write_text(json.dumps({"own": [o.__dict__ for o in own], "table": table}))
    data = json.loads(cache.read_text())
    return [OwnStruct(**o) for o in data["own"]], TypeTable(data["table"])


def decode(ssh: Session, loaders: Sequence[RunningLoader], build_dir: str,
           home: Path) -> Decoded:
    """The loaders' stdout -> events, lost counts, maps (never raises on bad records)."""
    objects: dict[str, ObjectTypes] = {}
    for loader in loaders:
        for probe in loader.probes:
            if probe.loader == "libbpf":
                obj = f"{object_stem(probe).rsplit('/', 1)[-1]}.bpf.o"
                objects[obj] = ObjectTypes(probe.name, object_btf(ssh, probe, build_dir, home),
                                           _dwarf_source(ssh, probe, build_dir, home),
                                           dict(probe.records))
            else:
                objects[Path(probe.source).name] = ObjectTypes(probe.name, None)
    lines: list[str] = []
    for loader in loaders:
        lines += loader.stdout.decode("utf-8", "replace").splitlines()
    try:
        return decode_lines(lines, objects)
    except (LabError, OSError, paramiko.SSHException) as exc:
        console.warn(f"records could not be decoded ({exc}); kept raw in loader output")
        return Decoded(notes=[str(exc)])
