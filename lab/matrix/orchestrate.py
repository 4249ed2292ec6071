"""The kernel matrix: one scenario on several Debian releases, compared side by side.

``run_matrix`` boots one lab per release (at most ``jobs`` at a time, each with its own
name, port and overlay), records what the release's kernel offers for every function the
scenario may probe (the *facts*), runs the scenario where its preflight passes, destroys
the labs, and writes ``results/matrix/<run id>/``:

  run.json                       the scenario, releases, jobs and target functions
  <release>/release.json         status, variant, reason, timings, the bundle's path
  <release>/facts/               kernel.json, facts.json, objdump-*.txt, bpftrace-lv-*.txt
  <release>/<scenario>/<run id>/ the scenario's results bundle, where it ran
  matrix.json, matrix.md         the table

The table is built from those files only (``build_matrix``), so it can be rebuilt and
tested from recorded runs. A function a kernel lacks, and a scenario whose preflight fails
there, are "not applicable" with the reason, never an error of the matrix.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import console
from lab.config import Settings
from lab.errors import LabError
from lab.image.build import Image, build_image, find_image, load_recipe
from lab.results.bundle import run_id as new_run_id
from lab.results.report.matrix import try_write_matrix_report
from lab.run.probes import GUEST_SRC, pack_sources, upload_sources
from lab.run.runner import run_scenario
from lab.scenario.model import Scenario, format_version, kernel_version
from lab.ssh import Session
from lab.vm import backend_for
from lab.vm.base import Backend

DEFAULT_RELEASES = ("bullseye", "bookworm", "trixie")
FENTRY_SINCE = (5, 5)  # BPF trampolines (fentry/fexit) appeared in Linux 5.5
NOT_APPLICABLE = "not applicable"
LAB_ERROR = "lab error"
ENTRY_BYTES = 16  # the live bytes the guest reads; the static entry is cut to match


# -- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixRun:
    path: Path
    matrix: dict[str, Any]
    markdown: str

    @property
    def exit_code(self) -> int:
        """0 when every release passed or does not apply, 2 on a lab failure, else 1."""
        statuses = [row["status"] for row in self.matrix["releases"]]
        if LAB_ERROR in statuses:
            return 2
        return 0 if all(s in ("passed", NOT_APPLICABLE) for s in statuses) else 1


def default_jobs(releases: int, host_cpus: int | None = None,
                 available_mib: int | None = None, lab_mib: int = 2048) -> int:
    """How many labs run at once when --jobs is not given.

    Measured on a 2-core host under TCG (acl-portable on 3 releases, warm caches, medians
    of 3 to 5 runs): --jobs 1 took 109 s, 2 took 100 s (the third release runs alone at
    the end), 3 took 85 s. A lab's long phases (make building the probes, objdump,
    bpftrace) keep about one vCPU busy, so a lab per host core plus one to fill the waits
    (boot, SSH round trips) is fastest; memory caps it.
    """
    jobs = min(releases, (host_cpus or os.cpu_count() or 1) + 1)
    if available_mib is None:
        available_mib = _available_mib()
    if available_mib:
        jobs = min(jobs, available_mib // (lab_mib + 256))
    return max(1, jobs)


def _available_mib() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) // 1024 if found else None


def parse_releases(text: str | Sequence[str] | None, images_dir: Path) -> list[str]:
    """``bullseye,bookworm`` -> the releases, each with a recipe in images/, no repeats."""
    if text is None:
        names = list(DEFAULT_RELEASES)
    elif isinstance(text, str):
        names = [part.strip() for part in text.split(",") if part.strip()]
    else:
        names = list(text)
    known = sorted(p.stem for p in images_dir.glob("*.yaml"))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise LabError(f"Unknown release(s) {', '.join(unknown) or '(none given)'}: use a "
                       f"comma-separated list of {', '.join(known)}.")
    return list(dict.fromkeys(names))


def matrix_settings(settings: Settings, release: str, run_dir: Path, prefix: str) -> Settings:
    """The settings of one release's lab: its own name (so port, overlay, state) and results."""
    return settings.with_overrides({"release": release, "name": f"{prefix}-{release}",
                                    "results": run_dir / release})


def run_matrix(settings: Settings, scenario: Scenario, releases: Sequence[str], *,
               jobs: int | None = None, keep: bool = False, prefix: str = "matrix",
               backend_factory: Callable[[Settings], Backend] = backend_for) -> MatrixRun:
    """Run a scenario on each release and write the matrix; see the module's docstring.

    ``jobs``: labs run at once (None: ``default_jobs``).
    """
    if jobs is None:
        jobs = default_jobs(len(releases), lab_mib=settings.memory)
    if jobs < 1:
        raise LabError(f"--jobs must be 1 or more, not {jobs}.")
    if prefix == "default" or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", prefix):
        raise LabError(f"Bad lab name prefix {prefix!r}: lower-case letters, digits and '-'.")
    for release in releases:
        load_recipe(settings, release)
    started = time.monotonic()
    run_dir = _new_run_dir(settings.results / "matrix")
    _write_json(run_dir / "run.json", {
        "run_id": run_dir.name, "scenario": scenario.name, "scenario_file": str(scenario.path),
        "releases": list(releases), "jobs": jobs, "keep": keep,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "targets": list(scenario.target_functions),
        "alternatives": [{"kernel": str(a.kernel), "functions": list(a.functions),
                          "min": format_version(a.kernel.min) if a.kernel.min else None,
                          "below": format_version(a.kernel.below) if a.kernel.below else None,
                          "reason": a.reason} for a in scenario.alternatives],
    })
    console.say(f"kernel matrix of {scenario.name} on {', '.join(releases)} "
                f"({jobs} lab{'s' if jobs > 1 else ''} at a time): {run_dir}")
    # Images first, one at a time: builds are heavy and keys are made on first use.
    for release in releases:
        release_settings = matrix_settings(settings, release, run_dir, prefix)
        if find_image(release_settings) is None:
            build_image(release_settings)
    images_s = round(time.monotonic() - started, 1)
    labs = {r: matrix_settings(settings, r, run_dir, prefix) for r in releases}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="matrix")
    try:
        futures = [pool.submit(_run_release, labs[r], scenario, keep, backend_factory)
                   for r in releases]
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        console.say("interrupted: stopping the matrix's labs")
        pool.shutdown(wait=False, cancel_futures=True)
        if not keep:
            for release_settings in labs.values():
                with contextlib.suppress(LabError, OSError):
                    backend_factory(release_settings).destroy()
        raise
    finally:
        pool.shutdown(wait=True)
    timing = {"images_s": images_s, "wall_s": round(time.monotonic() - started, 1)}
    _write_json(run_dir / "timing.json", timing)
    matrix = build_matrix(run_dir)
    markdown = render_markdown(matrix)
    _write_json(run_dir / "matrix.json", matrix)
    (run_dir / "matrix.md").write_text(markdown)
    if (problem := try_write_matrix_report(run_dir)) is not None:  # never raises
        console.warn(problem)
    return MatrixRun(run_dir, matrix, markdown)


def _new_run_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = new_run_id()
    name, suffix = base, 1
    while True:
        try:
            (root / name).mkdir()
            break
        except FileExistsError:
            suffix += 1
            name = f"{base}-{suffix}"
    tmp = root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(name)
    os.replace(tmp, root / "latest")
    return root / name


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


def _run_release(settings: Settings, scenario: Scenario, keep: bool,
                 backend_factory: Callable[[Settings], Backend]) -> None:
    """One release: up, facts, preflight, the scenario where it applies, destroy.

    Never raises for a failure of the lab or the scenario: release.json says what happened.
    """
    out = settings.results
    record: dict[str, Any] = {"release": settings.release, "lab": settings.name,
                              "status": LAB_ERROR, "reason": None, "variant": None,
                              "kernel": None, "bundle": None, "timings": {}}
    times: dict[str, float] = record["timings"]
    started = time.monotonic()
    backend = backend_factory(settings)
    try:
        mark = time.monotonic()
        target = backend.up()
        times["up_s"] = round(time.monotonic() - mark, 1)
        image = find_image(settings)
        if image is None:
            raise LabError(f"The {settings.release} image vanished from the cache.", code=2)
        record["kernel"] = image.kernel_release
        resolved = scenario.for_kernel(kernel_version(image.kernel_release))
        record["variant"] = resolved.describe_variant()
        mark = time.monotonic()
        with Session(target) as ssh:
            facts = collect_facts(settings, scenario, ssh, image, out / "facts")
        times["facts_s"] = round(time.monotonic() - mark, 1)
        problems = preflight_problems(resolved, facts)
        if problems:
            record["status"] = NOT_APPLICABLE
            record["reason"] = "; ".join(problems)
            console.say(f"{settings.release}: {scenario.name} does not apply: {record['reason']}")
        else:
            mark = time.monotonic()
            outcome = run_scenario(settings, scenario, backend)
            times["run_s"] = round(time.monotonic() - mark, 1)
            record["status"] = outcome.status
            record["reason"] = outcome.error
            record["bundle"] = str(outcome.bundle.relative_to(out))
            console.say(f"{settings.release}: {scenario.name} {outcome.status} "
                        f"({outcome.bundle})")
    except LabError as exc:
        record["status"] = LAB_ERROR
        record["reason"] = str(exc)
        console.warn(f"{settings.release}: {exc}")
    except Exception as exc:  # a bug or an SSH library error: recorded, not a crash
        record["status"] = LAB_ERROR
        record["reason"] = f"{type(exc).__name__}: {exc}"
        console.warn(f"{settings.release}: {record['reason']}")
    finally:
        if not keep:
            mark = time.monotonic()
            try:
                backend.destroy()
            except (LabError, OSError) as exc:
                console.warn(f"{settings.release}: destroying lab {settings.name} failed: {exc}")
            times["destroy_s"] = round(time.monotonic() - mark, 1)
        times["total_s"] = round(time.monotonic() - started, 1)
        _write_json(out / "release.json", record)


def collect_facts(settings: Settings, scenario: Scenario, ssh: Session, image: Image,
                  out: Path) -> dict[str, Any]:
    """What the running kernel offers for every function the scenario may probe.

    Static disassembly and bpftrace listings are cached on the host by kernel build ID,
    in the cache the scenario runner uses too, so they are made once per kernel.
    """
    functions = list(scenario.target_functions)
    static = ["__fentry__", *functions]
    cache = settings.home / "static" / image.build_id
    upload_sources(ssh, pack_sources(settings.bpf_dir))
    request = {
        "functions": functions,
        "objdump": [fn for fn in static if not (cache / f"objdump-{fn}.txt").exists()],
        "bpftrace": [fn for fn in functions if not (cache / f"bpftrace-lv-{fn}.txt").exists()],
        "live": functions,
    }
    result = ssh.run(["python3", f"{GUEST_SRC}/guest/fentry_lab_guest.py", "facts"],
                     stdin=json.dumps(request).encode(), timeout=600)
    if result.exit_status != 0:
        raise LabError(f"The guest helper failed (facts, exit {result.exit_status}): "
                       f"{result.err.strip()[-2000:]}", code=2)
    report = json.loads(result.out)
    cache.mkdir(parents=True, exist_ok=True)
    for kind, key in (("objdump", "objdump"), ("bpftrace-lv", "bpftrace_lv")):
        for fn, text in report.get(key, {}).items():
            (cache / f"{kind}-{fn}.txt").write_text(text)
    out.mkdir(parents=True, exist_ok=True)
    for fn in static:
        (out / f"objdump-{fn}.txt").write_text((cache / f"objdump-{fn}.txt").read_text())
    for fn in functions:
        (out / f"bpftrace-lv-{fn}.txt").write_text((cache / f"bpftrace-lv-{fn}.txt").read_text())
    facts = {"functions": functions, "kernel": report["kernel"],
             "traceable": report["traceable"], "in_kallsyms": report["in_kallsyms"],
             "live": report["live_before"], "image_build_id": image.build_id}
    _write_json(out / "kernel.json", report["kernel"])
    _write_json(out / "facts.json", facts)
    return facts


def preflight_problems(scenario: Scenario, facts: Mapping[str, Any]) -> list[str]:
    """Why the (kernel-resolved) scenario cannot run on this kernel; empty when it can."""
    kernel = facts["kernel"]
    release = kernel["release"]
    problems = []
    for fn in scenario.requires.functions:
        if not facts["traceable"].get(fn):
            where = ("exists but is not traceable" if facts["in_kallsyms"].get(fn)
                     else "is absent")
            reason = (f": {scenario.variant.reason}"
                      if scenario.variant is not None and scenario.variant.reason else "")
            problems.append(f"{fn} {where} in {release}{reason}")
    need = scenario.requires.kernel
    if tuple(kernel["version"]) < need:
        problems.append(f"kernel {format_version(kernel['version'])} is older than the "
                        f"{format_version(need)} the scenario needs")
    if not kernel["btf"]:
        problems.append(f"{release} has no BTF (/sys/kernel/btf/vmlinux)")
    return problems


# -- the table, from recorded files --------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def build_matrix(run_dir: Path) -> dict[str, Any]:
    """matrix.json's content, from the files a matrix run recorded in run_dir."""
    run = _read_json(run_dir / "run.json") or {}
    targets: list[str] = list(run.get("targets", []))
    rows = [_release_row(run_dir / release, release, targets, run)
            for release in run.get("releases", [])]
    timing = _read_json(run_dir / "timing.json") or {}
    return {
        "scenario": run.get("scenario"),
        "run_id": run.get("run_id") or run_dir.name,
        "started": run.get("started"),
        "jobs": run.get("jobs"),
        "targets": targets,
        "wall_s": timing.get("wall_s"),
        "images_s": timing.get("images_s"),
        "sum_of_releases_s": round(sum(row["timings"].get("total_s", 0.0) for row in rows), 1),
        "releases": rows,
    }


def _release_row(directory: Path, release: str, targets: Sequence[str],
                 run: Mapping[str, Any]) -> dict[str, Any]:
    record = _read_json(directory / "release.json") or {
        "status": LAB_ERROR, "reason": "the release did not record a result"}
    facts = _read_json(directory / "facts" / "facts.json") or {}
    kernel: dict[str, Any] = facts.get("kernel") or {}
    config = kernel.get("config") or {}
    version = kernel.get("version") or (
        list(kernel_version(record["kernel"])) if record.get("kernel") else None)
    bundle = directory / record["bundle"] if record.get("bundle") else None
    live = (_read_json(bundle / "live-text.json") if bundle else None) or {}
    summary = (_read_json(bundle / "summary.json") if bundle else None) or {}
    fentry = parse_objdump(_read_text(directory / "facts" / "objdump-__fentry__.txt") or "")
    row: dict[str, Any] = {
        "release": release,
        "kernel": kernel.get("release") or record.get("kernel"),
        "version": version,
        "btf": bool(kernel.get("btf")) if kernel else None,
        "trampolines": trampoline_support(version, config) if kernel else None,
        "ibt": config.get("CONFIG_X86_KERNEL_IBT") == "y" if kernel else None,
        "bpftrace": (kernel.get("tools") or {}).get("bpftrace"),
        "bpftrace_probe": bpftrace_kind((kernel.get("tools") or {}).get("bpftrace")),
        "fentry_static": _insns_json(fentry[:ENTRY_BYTES]) if fentry else None,
        "variant": record.get("variant"),
        "status": record["status"],
        "reason": record.get("reason"),
        "expectations": _expectations(summary),
        "bundle": str(bundle.relative_to(directory.parent)) if bundle else None,
        "timings": record.get("timings") or {},
        "functions": {},
    }
    for fn in targets:
        readings = live.get(fn) or {}
        row["functions"][fn] = _function_cell(directory, fn, facts, readings,
                                              "attached" in readings, record, run, version)
    return row


def trampoline_support(version: Sequence[int] | None,
                       config: Mapping[str, str]) -> dict[str, Any]:
    """fentry/fexit need BPF trampolines: Linux >= 5.5 with direct ftrace calls and the JIT."""
    reasons = []
    if version is None or tuple(version) < FENTRY_SINCE:
        reasons.append(f"kernel older than {format_version(FENTRY_SINCE)}")
    if config.get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") != "y":
        reasons.append("no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    if config.get("CONFIG_BPF_JIT") != "y":
        reasons.append("no CONFIG_BPF_JIT")
    return {"supported": not reasons, "why": "; ".join(reasons) or
            f"{format_version((version or ())[:2])} >= {format_version(FENTRY_SINCE)}, "
            "DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y, BPF_JIT=y"}


def bpftrace_kind(version_text: str | None) -> str | None:
    """``bpftrace v0.17.0`` -> ``kfunc`` (fentry: is the name from 0.20 on)."""
    if not version_text:
        return None
    found = re.search(r"v?(\d+)\.(\d+)", version_text)
    if not found:
        return None
    return "fentry" if (int(found.group(1)), int(found.group(2))) >= (0, 20) else "kfunc"


def _expectations(summary: Mapping[str, Any]) -> dict[str, int] | None:
    checks = summary.get("expectations")
    if not isinstance(checks, list):
        return None
    return {"ok": sum(1 for c in checks if c.get("ok")), "total": len(checks)}


def _function_cell(directory: Path, fn: str, facts: Mapping[str, Any],
                   live: Mapping[str, Any], probed: bool, record: Mapping[str, Any],
                   run: Mapping[str, Any], version: Sequence[int] | None) -> dict[str, Any]:
    in_kallsyms = (facts.get("in_kallsyms") or {}).get(fn)
    traceable = (facts.get("traceable") or {}).get(fn)
    static = parse_objdump(_read_text(directory / "facts" / f"objdump-{fn}.txt") or "")
    prefix = entry_prefix(static)
    span = sum(len(insn["bytes"].split()) for insn in prefix)
    cell: dict[str, Any] = {
        "exists": in_kallsyms,
        "traceable": traceable,
        "signature": signature_from_bpftrace(
            fn, _read_text(directory / "facts" / f"bpftrace-lv-{fn}.txt") or ""),
        "static_entry": _insns_json(prefix) if prefix else None,
        "live_detached": _live_json((facts.get("live") or {}).get(fn), span),
        "live_attached": _live_json(live.get("attached"), span) if probed else None,
        "probed": probed,
        "note": None,
    }
    kernel = (facts.get("kernel") or {}).get("release") or record.get("kernel") or "this kernel"
    if not facts:
        cell["note"] = "unknown: no facts recorded"
    elif not in_kallsyms:
        cell["note"] = (f"{NOT_APPLICABLE}: {fn} absent from {kernel}"
                        + _absent_reason(fn, run, version))
    elif not traceable:
        cell["note"] = f"{NOT_APPLICABLE}: {fn} is in {kernel} but not traceable"
    elif not probed:
        cell["note"] = (f"present, not probed here ({record.get('variant')})"
                        if record.get("status") != NOT_APPLICABLE else "present")
    return cell


def _absent_reason(fn: str, run: Mapping[str, Any], version: Sequence[int] | None) -> str:
    """The scenario's own words on a missing function: the reason of the alternative that
    applies to this kernel, when that alternative does without the function."""
    for alternative in run.get("alternatives", []):
        low = kernel_version(alternative["min"]) if alternative.get("min") else ()
        high = kernel_version(alternative["below"]) if alternative.get("below") else None
        inside = version is not None and tuple(version) >= low and (
            high is None or tuple(version) < high)
        if inside and fn not in alternative.get("functions", []) and alternative.get("reason"):
            return f" ({alternative['reason']})"
    return ""


# -- merging runs made on several machines ---------------------------------------------------


def merge_runs(run_dirs: Sequence[Path], out: Path) -> MatrixRun:
    """One table from matrix runs of the same scenario made apart (a CI job per release).

    Each release's directory is copied from the first run that has it; the result is a run
    directory like any other, with its own matrix.json and matrix.md.
    """
    runs = [(d, _read_json(d / "run.json")) for d in run_dirs]
    missing = [str(d) for d, run in runs if not run]
    if missing or not runs:
        raise LabError(f"Not a matrix run (no run.json): {', '.join(missing) or '(none)'}.")
    scenarios = {run["scenario"] for _, run in runs}
    if len(scenarios) > 1:
        raise LabError(f"Cannot merge runs of different scenarios: {', '.join(sorted(scenarios))}.")
    out.mkdir(parents=True, exist_ok=True)
    releases: list[str] = []
    targets: list[str] = []
    for directory, run in runs:
        for release in run["releases"]:
            if release not in releases and (directory / release).is_dir():
                shutil.copytree(directory / release, out / release, dirs_exist_ok=True)
                releases.append(release)
        targets += [fn for fn in run["targets"] if fn not in targets]
    first = runs[0][1]
    walls = [(_read_json(d / "timing.json") or {}).get("wall_s") or 0.0 for d, _ in runs]
    _write_json(out / "run.json", {**first, "run_id": out.name, "releases": releases,
                                   "targets": targets, "jobs": "per machine",
                                   "merged_from": [r.get("run_id") for _, r in runs]})
    _write_json(out / "timing.json", {"wall_s": max(walls), "images_s": None})
    matrix = build_matrix(out)
    markdown = render_markdown(matrix)
    _write_json(out / "matrix.json", matrix)
    (out / "matrix.md").write_text(markdown)
    return MatrixRun(out, matrix, markdown)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.matrix.orchestrate merge OUT RUN_DIR...`` (for CI) and ``table RUN_DIR``."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) >= 3 and args[0] == "merge":
            result = merge_runs([Path(a) for a in args[2:]], Path(args[1]))
            print(result.markdown, end="")
            return 0
        if len(args) == 2 and args[0] == "table":
            run_dir = Path(args[1])
            matrix = build_matrix(run_dir)
            markdown = render_markdown(matrix)
            _write_json(run_dir / "matrix.json", matrix)
            (run_dir / "matrix.md").write_text(markdown)
            print(markdown, end="")
            return 0
    except LabError as exc:
        print(f"fentry-lab: error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m lab.matrix.orchestrate merge OUT RUN_DIR... | table RUN_DIR",
          file=sys.stderr)
    return 2


# -- parsing the guest's text --------------------------------------------------------------


_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*(?:\t(.*))?$")


def parse_objdump(text: str) -> list[dict[str, str]]:
    """``objdump -d`` lines -> [{address, bytes, text}], continuation bytes joined."""
    insns: list[dict[str, str]] = []
    for line in text.splitlines():
        match = _OBJDUMP_LINE.match(line)
        if not match:
            continue
        address, raw, asm = match.groups()
        if asm is None:
            if insns:
                insns[-1]["bytes"] += " " + raw.strip()
            continue
        insns.append({"address": address, "bytes": raw.strip(), "text": tidy_asm(asm)})
    return insns


def tidy_asm(text: str) -> str:
    """``call   ffffffff8108c4b0 <__fentry__>`` -> ``call __fentry__``; spaces squeezed."""
    text = re.sub(r"\s+#.*$", "", text)
    text = re.sub(r"\b(?:0x)?[0-9a-f]{8,16} <([^>]+)>", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def entry_prefix(insns: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The instructions up to the ``call __fentry__`` (endbr64 first under IBT), else two."""
    total = 0
    for index, insn in enumerate(insns):
        total += len(insn["bytes"].split())
        if total > ENTRY_BYTES:
            break
        if insn["text"].startswith("call") and "__fentry__" in insn["text"]:
            return list(insns[:index + 1])
    return list(insns[:2])


def _insns_json(insns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"bytes": " ".join(str(i["bytes"]) for i in insns),
            "text": "; ".join(_squeeze([str(i["text"]) for i in insns]))}


def _squeeze(texts: Sequence[str]) -> list[str]:
    """Runs of one instruction become ``nop x9``."""
    out: list[str] = []
    count = 0
    for index, text in enumerate(texts):
        count += 1
        if index + 1 < len(texts) and texts[index + 1] == text:
            continue
        out.append(f"{text} x{count}" if count > 1 else text)
        count = 0
    return out


def _live_json(peek: Mapping[str, Any] | None, span: int) -> dict[str, Any] | None:
    """The first ``span`` bytes of a live read (the static entry's length), named."""
    if not peek or "bytes" not in peek:
        return None
    span = span or ENTRY_BYTES
    target = peek.get("call_target") or {}
    insns, used = [], 0
    for insn in peek.get("instructions", []):
        if used >= span:
            break
        text = str(insn["text"])
        if target.get("symbol") and text.startswith("call") and \
                text.split()[-1] == target.get("address"):
            text = f"call {target['symbol']}"
        insns.append({"bytes": insn["bytes"], "text": text})
        used += len(str(insn["bytes"]).split())
    result = _insns_json(insns)
    result["address"] = peek.get("address")
    return result


def signature_from_bpftrace(fn: str, text: str) -> str | None:
    """``bpftrace -lv`` output -> ``int fn(struct inode *inode, ...)``; None if absent.

    bpftrace 0.11 prints ``kfunc:fn`` and ``type name;`` lines, 0.17 ``kfunc:vmlinux:fn``,
    0.20 and later ``fentry:vmlinux:fn``; the last pseudo-argument ``retval`` gives the
    return type (none: void).
    """
    params: list[tuple[str, str]] = []
    seen = False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if re.fullmatch(rf"(?:kfunc|fentry|fexit|kretfunc)(?::\w+)?:{re.escape(fn)}",
                        line.strip()):
            if seen:
                break
            seen = True
            continue
        if seen and line[:1] in (" ", "\t"):
            decl = line.strip().rstrip(";").strip()
            kind, _, name = decl.rpartition(" ")
            params.append((kind.strip(), name))
        elif seen:
            break
    if not seen:
        return None
    returns = "void"
    if params and params[-1][1] == "retval":
        returns = params.pop()[0]
    args = ", ".join(kind + ("" if kind.endswith("*") else " ") + name for kind, name in params)
    return f"{returns} {fn}({args or 'void'})"


# -- markdown ------------------------------------------------------------------------------


def _code(text: str | None) -> str:
    return f"`{text}`" if text else "-"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") if text not in (None, "") else "-"


def _insns_cell(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{_code(value['bytes'])} {_cell(value['text'])}"


def _status_cell(row: Mapping[str, Any]) -> str:
    status = str(row["status"])
    checks = row.get("expectations")
    if checks and status in ("passed", "failed"):
        status += f" ({checks['ok']}/{checks['total']} expectations)"
    if row.get("reason") and status != "passed":
        status += f": {row['reason']}"
    return _cell(status)


def _yes_no(value: object) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _bpftrace_text(row: Mapping[str, Any]) -> str | None:
    text = str(row.get("bpftrace") or "").removeprefix("bpftrace ")
    kind = row.get("bpftrace_probe")
    return f"{text} ({kind}:)" if text and kind else text or None


def render_markdown(matrix: Mapping[str, Any]) -> str:
    rows: list[dict[str, Any]] = matrix["releases"]
    lines = [f"# Kernel matrix: {matrix['scenario']}", ""]
    wall, total = matrix.get("wall_s"), matrix.get("sum_of_releases_s")
    lines.append(f"Run {matrix['run_id']}, --jobs {matrix.get('jobs')}: {wall} s in all "
                 f"(the releases' own times add up to {total} s; images "
                 f"{matrix.get('images_s')} s).")
    lines += ["", "| release | kernel | BTF | fentry/fexit trampolines | IBT | bpftrace "
              "| variant | scenario |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        tramp = row.get("trampolines")
        tramp_text = "?" if tramp is None else (
            f"{'yes' if tramp['supported'] else 'no'} ({tramp['why']})")
        lines.append(f"| {row['release']} | {_cell(row['kernel'])} | {_yes_no(row['btf'])} "
                     f"| {_cell(tramp_text)} | {_yes_no(row['ibt'])} | "
                     f"{_cell(_bpftrace_text(row))} | {_cell(row['variant'])} | "
                     f"{_status_cell(row)} |")
    lines += ["", "## `__fentry__` (static, debug vmlinux)", "",
              "| release | bytes | instructions |", "|---|---|---|"]
    for row in rows:
        fentry = row.get("fentry_static")
        lines.append(f"| {row['release']} | {_code(fentry and fentry['bytes'])} | "
                     f"{_cell(fentry and fentry['text'])} |")
    for fn in matrix["targets"]:
        lines += ["", f"## `{fn}`", "",
                  "| release | exists | signature (BTF) | static entry | live entry, detached "
                  "| live entry, attached | note |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            cell = row["functions"].get(fn) or {}
            exists = _yes_no(cell.get("exists"))
            if cell.get("exists") and not cell.get("traceable"):
                exists += ", not traceable"
            lines.append(
                f"| {row['release']} | {exists} | {_code(cell.get('signature'))} | "
                f"{_insns_cell(cell.get('static_entry'))} | "
                f"{_insns_cell(cell.get('live_detached'))} | "
                f"{_insns_cell(cell.get('live_attached'))} | {_cell(cell.get('note'))} |")
    lines += ["", "## Times (s)", "", "| release | up | facts | scenario | destroy | total |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        t = row["timings"]
        lines.append(f"| {row['release']} | {_cell(t.get('up_s'))} | {_cell(t.get('facts_s'))} "
                     f"| {_cell(t.get('run_s'))} | {_cell(t.get('destroy_s'))} | "
                     f"{_cell(t.get('total_s'))} |")
    bundles = [f"- {row['release']}: `{row['bundle']}`" for row in rows if row.get("bundle")]
    if bundles:
        lines += ["", "Results bundles (relative to this directory):", "", *bundles]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
