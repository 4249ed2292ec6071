"""Run the probe-cost benchmark on one lab, mode by mode, and on several kernels in turn.

The guest program (bpf/bench/bench.c + probes.bpf.c) is built once per sources and kernel,
like the scenario probes, and cached on the host. The samples are taken in rounds: each
round runs every mode once (one sample each), so a host whose speed drifts (these machines
are shared) slows a round's base and its probes alike, and each mode's cost is the median
of its per-round differences with that round's base. bench.json is saved after every
sample, so a lab that dies mid-benchmark leaves the rounds already measured.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import console
from lab.bench.render import markdown_report, svg_chart, text_report
from lab.bench.stats import MODES, REFERENCES, ModeFigures, compare, parse_mode
from lab.config import Settings
from lab.errors import LabError, LabFailure, ProbeLoadError, UsageError
from lab.image.build import find_image, read_image
from lab.results.bundle import ResultsBundle
from lab.run.probes import (
    GUEST_BUILD,
    GUEST_SRC,
    build_key,
    pack_sources,
    save_build,
    upload_sources,
)
from lab.scenario.model import Probe
from lab.ssh import Session
from lab.vm import backend_for
from lab.vm.base import Backend

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
DEFAULT_FUNCTION = "__x64_sys_getpgid"
SKIPPED = 3  # bench.c's exit status for a mode this kernel does not offer


@dataclass(frozen=True)
class BenchOutcome:
    path: Path
    text: str
    exit_code: int


def trigger_for(function: str) -> str:
    """The loop that reaches the function: prctl(PR_SET_NAME) for comm, else getpgid."""
    return "comm" if "comm" in function or "prctl" in function else "getpgid"


def run_bench(settings: Settings, *, function: str = DEFAULT_FUNCTION, samples: int = 5,
              releases: Sequence[str] = (), sample_ms: int = 1000, warmup_ms: int = 500,
              destroy: bool = False,
              backend_factory: Callable[[Settings], Backend] = backend_for) -> BenchOutcome:
    if not IDENTIFIER.match(function):
        raise UsageError(f"{function!r} is not a kernel function name; pass e.g. "
                         f"--function {DEFAULT_FUNCTION} or --function __set_task_comm.")
    if not 1 <= samples <= 100:
        raise UsageError(f"--samples {samples}: use 1 to 100 samples of about a second.")
    started = time.monotonic()
    bundle = ResultsBundle(settings.results, "bench")
    result: dict[str, Any] = {
        "run_id": bundle.run_id, "status": "running", "function": function,
        "trigger": trigger_for(function), "samples": samples, "sample_ms": sample_ms,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernels": [], "references": list(REFERENCES), "error": None}
    labs = [(r, dataclasses.replace(settings, release=r, name=f"{settings.name}-{r}"))
            for r in releases] or [(settings.release, settings)]
    exit_code = 0

    def save() -> None:
        bundle.write_json("bench.json", result)

    for release, lab_settings in labs:
        kernel: dict[str, Any] = {"release": release, "lab": lab_settings.name,
                                  "function": function, "trigger": result["trigger"],
                                  "samples": samples, "modes": [], "error": None}
        result["kernels"].append(kernel)
        backend = backend_factory(lab_settings)
        try:
            _bench_lab(lab_settings, backend, kernel, save,
                       (function, samples, sample_ms, warmup_ms))
        except LabFailure as exc:
            kernel["error"], exit_code = str(exc), 2
        except LabError as exc:
            if exc.code == 2:
                kernel["error"], exit_code = str(exc), 2
            elif len(labs) > 1:  # this kernel cannot run it: say so, go on with the others
                kernel["error"], exit_code = str(exc), max(exit_code, 1)
            else:
                result["status"], result["error"] = "error", str(exc)
                save()
                raise
        finally:
            if destroy or len(labs) > 1:
                backend.destroy()
        if any(m["status"] == "failed" for m in kernel["modes"]) and not exit_code:
            exit_code = 1
        save()
    result["status"] = {0: "passed", 1: "failed"}.get(exit_code, "error")
    result["error"] = next((k["error"] for k in result["kernels"] if k["error"]), None)
    result["duration_s"] = round(time.monotonic() - started, 1)
    save()
    bundle.write_text("bench.md", markdown_report(result))
    bundle.write_text("bench.svg", svg_chart(result))
    text = text_report(result) + (f"\nfinished in {result['duration_s']:.0f} s; "
                                  f"results: {bundle.path}\n")
    return BenchOutcome(bundle.path, text, exit_code)


def _bench_lab(settings: Settings, backend: Backend, kernel: dict[str, Any],
               save: Callable[[], None], plan: tuple[str, int, int, int]) -> None:
    function, samples, sample_ms, warmup_ms = plan
    running = backend.up()
    target = running.target
    status = backend.status(probe=False)
    kernel.update(kernel=status.kernel_release, accel=status.accel)
    image = (read_image(Path(running.image)) if running.image else None) or find_image(settings)
    if image is None:
        raise LabFailure("The lab's image is gone from the cache; run `invoke image.build`.")
    with Session(target) as ssh:
        found = ssh.run(["awk", "-v", f"f={function}", "$1 == f {n = 1} END {exit !n}",
                         "/sys/kernel/tracing/available_filter_functions"], timeout=60)
        if found.exit_status != 0:
            raise UsageError(
                f"{function} is not a traceable function on kernel {status.kernel_release} "
                "(not in /sys/kernel/tracing/available_filter_functions: unknown, inlined or "
                f"notrace). Pick one from that list, e.g. {DEFAULT_FUNCTION}.")
        # Only what the benchmark needs goes into the guest: bpf/bench/ and the Makefile.
        tarball = pack_sources(settings.bpf_dir,
                               (Probe("bench", "bpf/bench/probes.bpf.c", "libbpf"),))
        key = build_key(tarball, image.kernel_release, str(image.manifest["recipe_digest"]))
        build_dir = f"{GUEST_BUILD}/bench-{key}"
        cache = settings.home / "builds" / f"bench-{key}.tar"
        upload_sources(ssh, tarball, build_dir, cache)
        program = _build(ssh, build_dir, cache)
        kernel["cpus"] = ssh.run("nproc", timeout=30).out.strip()
        rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for number in range(1, samples + 1):
            for mode in MODES:
                if rounds[mode] and rounds[mode][-1].get("status") != "measured":
                    continue  # skipped or failed once: the kernel will not change its mind
                console.say(f"bench {status.release}: round {number}/{samples}: {mode}")
                rounds[mode].append(_one_sample(ssh, program, mode, kernel["trigger"],
                                                function, (sample_ms, warmup_ms)))
                kernel["modes"] = [_merged(m, raws, kernel["trigger"], function)
                                   for m, raws in rounds.items() if raws]
                kernel["rounds"] = number
                _refresh(kernel)
                save()


def _build(ssh: Session, build_dir: str, cache: Path) -> str:
    program = f"{build_dir}/bench/bench"
    started = time.monotonic()
    script = (f"[ -x {program} ] && exit 0; "
              f"make -s -C {GUEST_SRC}/bpf O={build_dir} {build_dir}/bench/probes.skel.h && "
              f"cc -O2 -Wall -I{build_dir}/bench {GUEST_SRC}/bpf/bench/bench.c "
              f"-lbpf -lelf -lz -o {program}.tmp && mv {program}.tmp {program} && echo built")
    result = ssh.run(script, timeout=600)
    if result.exit_status != 0:
        if result.timed_out or result.exit_status < 0:
            raise LabFailure("Building the benchmark in the guest did not finish: "
                             f"{result.err.strip()[-1000:]}")
        raise ProbeLoadError(
            "Building the benchmark in the guest failed (this release's clang, bpftool or "
            "libbpf may be too old for bpf/bench; it needs libbpf >= 0.8): "
            f"{(result.err or result.out).strip()[-2000:]}")
    if "built" in result.out:
        console.say(f"benchmark built in the guest in {time.monotonic() - started:.0f} s")
        save_build(ssh, build_dir, cache)
    return program


def _one_sample(ssh: Session, program: str, mode: str, trigger: str, function: str,
                timing: tuple[int, int]) -> dict[str, Any]:
    """One run of the guest tool: attach the mode, warm up, take one sample, detach."""
    sample_ms, warmup_ms = timing
    argv = [program, function, trigger, mode, "1", str(sample_ms), str(warmup_ms)]
    result = ssh.run(argv, timeout=60 + sample_ms / 1000 * 2)
    lines = [line for line in result.out.splitlines() if line.startswith("{")]
    try:
        raw: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        raw = {}
    if result.exit_status not in (0, SKIPPED) or not raw:
        reason = (f"the benchmark exited {result.exit_status}"
                  f"{' (timed out)' if result.timed_out else ''}: {result.err.strip()[-500:]}")
        return {"mode": mode, "status": "failed", "reason": reason, "raw": raw}
    return raw


def _merged(mode: str, raws: list[dict[str, Any]], trigger: str,
            function: str) -> dict[str, Any]:
    """A mode's rounds as one record: samples in round order, calls and hits summed."""
    last = raws[-1]
    if "raw" in last:  # the tool itself failed: keep what it said
        return last
    if last.get("status") != "measured":  # this kernel does not offer the mode
        return parse_mode(last).as_dict() | {"raw": last}
    hits: dict[str, int] = {}
    for r in raws:
        for name, count in dict(r.get("hits", {})).items():
            hits[str(name)] = hits.get(str(name), 0) + int(count)
    raw = {"mode": mode, "status": "measured",
           "samples": [s for r in raws for s in r.get("samples", [])],
           "calls": sum(int(r.get("calls", 0)) for r in raws), "hits": hits}
    figures = parse_mode(raw)
    if figures.status == "failed" and mode != "base" and not any(figures.hits.values()):
        figures = dataclasses.replace(figures, reason=(
            f"no hits at all: the {trigger} loop does not reach {function}, or the probe "
            "never fired"))
    return figures.as_dict() | {"raw": raw, "rounds": len(raws)}


def _refresh(kernel: dict[str, Any]) -> None:
    """Recompute added ns and ratio to kprobe over the modes measured so far."""
    modes = kernel["modes"]
    figures = compare([_figures(m) for m in modes], paired=True)
    for m, f in zip(modes, figures, strict=True):
        m["added_ns"] = None if f.added_ns is None else round(f.added_ns, 2)
        m["ratio_to_kprobe"] = None if f.ratio_to_kprobe is None else round(f.ratio_to_kprobe, 3)
    kernel["skipped"] = {m["mode"]: m.get("reason", "") for m in modes
                         if m["status"] == "skipped"}


def _figures(m: dict[str, Any]) -> ModeFigures:
    return ModeFigures(m["mode"], m["status"], tuple(m.get("rates", ())), m.get("calls", 0),
                       m.get("hits", {}), m.get("reason", ""))
