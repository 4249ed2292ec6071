"""The kernel matrix: one scenario on several Debian releases, compared side by side.

``run_matrix`` boots one lab per release (at most ``jobs`` at a time, each with its own
name, port and overlay), records what the release's kernel offers for every function the
scenario may probe (the *facts*), runs the scenario where the runner's preflight passes,
destroys the labs, and writes ``results/matrix/<run id>/``:

  run.json                       the scenario, releases, jobs and target functions
  <release>/release.json         status, variant, reason, timings, the bundle's path
  <release>/facts/               kernel.json, facts.json, objdump-*.txt, bpftrace-lv-*.txt
  <release>/<scenario>/<run id>/ the scenario's results bundle, where it ran
  matrix.json, matrix.md         the table (table.py, markdown.py)

A function a kernel lacks, and a scenario whose preflight fails there, are "not
applicable" with the reason, never an error of the matrix.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import console
from lab.config import Settings
from lab.errors import LabError, LabFailure, UsageError
from lab.image.build import Image, build_image, find_image, known_releases, load_recipe, read_image
from lab.image.recipe import DEFAULT_MATRIX_RELEASES
from lab.matrix.table import LAB_ERROR, NOT_APPLICABLE, MatrixRun, write_table
from lab.results.bundle import new_run_dir, write_atomic, write_json
from lab.results.report.matrix import try_write_matrix_report
from lab.run.guest import Facts, GuestHelper, StaticCache
from lab.run.preflight import preflight_problems
from lab.run.probes import pack_sources, upload_sources
from lab.run.runner import run_scenario
from lab.scenario.model import Scenario, format_version, kernel_version
from lab.ssh import Session
from lab.vm import backend_for
from lab.vm.base import Backend

DEFAULT_RELEASES = DEFAULT_MATRIX_RELEASES  # all five: bullseye .. sid
__all__ = ["MatrixRun", "default_jobs", "parse_releases", "run_matrix"]


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
    known = known_releases(images_dir)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(f"Unknown release(s) {', '.join(unknown) or '(none given)'}: use a "
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
        raise UsageError(f"--jobs must be 1 or more, not {jobs}.")
    if prefix == "default" or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", prefix):
        raise UsageError(f"Bad lab name prefix {prefix!r}: lower-case letters, digits and '-'.")
    for release in releases:
        load_recipe(settings, release)
    started = time.monotonic()
    run_dir = new_run_dir(settings.results / "matrix")
    write_json(run_dir / "run.json", {
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
    write_json(run_dir / "timing.json", timing)
    run = write_table(run_dir)
    if (problem := try_write_matrix_report(run_dir)) is not None:  # never raises
        console.warn(problem)
    return run


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
        running = backend.up()
        times["up_s"] = round(time.monotonic() - mark, 1)
        booted = running.image
        image = read_image(Path(booted)) if booted else find_image(settings)
        if image is None:
            raise LabFailure(f"The {settings.release} image vanished from the cache.")
        record["kernel"] = image.kernel_release
        resolved = scenario.for_kernel(kernel_version(image.kernel_release))
        record["variant"] = resolved.describe_variant()
        mark = time.monotonic()
        with Session(running.target) as ssh:
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
        write_json(out / "release.json", record)


def collect_facts(settings: Settings, scenario: Scenario, ssh: Session, image: Image,
                  out: Path) -> Facts:
    """What the running kernel offers for every function the scenario may probe.

    Static disassembly and bpftrace listings come from the cache the runner uses too
    (by kernel build ID), so they are made once per kernel.
    """
    functions = list(scenario.target_functions)
    static = ["__fentry__", *functions]
    cache = StaticCache(settings.home, image.build_id)
    upload_sources(ssh, pack_sources(settings.bpf_dir))  # the guest helper only
    with GuestHelper(ssh) as guest:
        facts = guest.facts({
            "functions": functions,
            "objdump": cache.missing("objdump", static),
            "bpftrace": cache.missing("bpftrace-lv", functions),
            "live": functions,
        })
    cache.store(facts)
    for fn in static:
        write_atomic(out / f"objdump-{fn}.txt", cache.read("objdump", fn).encode())
    for fn in functions:
        write_atomic(out / f"bpftrace-lv-{fn}.txt", cache.read("bpftrace-lv", fn).encode())
    write_json(out / "kernel.json", facts.kernel.raw)
    write_json(out / "facts.json", {
        "functions": functions, "kernel": facts.kernel.raw, "traceable": facts.traceable,
        "in_kallsyms": facts.in_kallsyms, "live": facts.live_before,
        "image_build_id": image.build_id})
    return facts
