"""One scenario run: preflight -> build -> setup -> attach -> steps -> detach -> collect -> verify.

Everything collected is written into the results bundle as soon as it is known; on any
failure the probes are detached, summary.json says "error" with the reason, and the lab
stays up and usable for the next run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import console
from lab.config import Settings
from lab.errors import LabError
from lab.image.build import Image, find_image, read_image
from lab.results.bundle import ResultsBundle
from lab.results.check import Check
from lab.results.report import try_write_report
from lab.run.events import BtfError, EventDecoder
from lab.run.expect import check_events, check_step, check_trace
from lab.run.probes import (
    GUEST_BUILD,
    GUEST_SRC,
    ProbeLoadError,
    RunningLoader,
    build_key,
    build_targets,
    fetch_btf,
    object_stem,
    pack_sources,
    restore_build,
    save_build,
    start_loader,
    upload_sources,
)
from lab.scenario.model import Scenario, Step, kernel_version
from lab.ssh import CommandResult, Session
from lab.vm.base import Backend

STEP_TEXT_LIMIT = 64 * 1024  # per stream in steps.jsonl; full output goes to steps/


class ScenarioAborted(Exception):
    """The scenario could not run to the end for a reason in the scenario or the kernel."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Outcome:
    status: str  # passed | failed | error
    bundle: Path
    checks: list[Check]
    error: str | None = None
    exit_code: int = 0
    phases: dict[str, float] = field(default_factory=dict)


class _Phases:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - started, 3)


def guest_command(step: Step) -> list[str]:
    """The argv that runs a step in the guest as its user (root's session runs runuser)."""
    if step.user == "root":
        return list(step.command)
    return ["runuser", "-u", step.user, "--", *step.command]


def run_scenario(settings: Settings, scenario: Scenario, backend: Backend) -> Outcome:
    bundle = ResultsBundle(settings.results, scenario.name)
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    phases = _Phases()
    run = _Run(settings, scenario, bundle, phases)
    error: str | None = None
    exit_code = 0
    try:
        with phases("lab"):
            target = backend.up()
            booted = backend.status().image
        with Session(target) as ssh:
            run.execute(ssh, read_image(Path(booted)) if booted else None)
    except ScenarioAborted as exc:
        error, exit_code = str(exc), exc.code
    except LabError as exc:
        error, exit_code = str(exc), 2 if exc.code == 2 else exc.code
    except KeyboardInterrupt:
        error, exit_code = "interrupted (Ctrl-C)", 130
    checks = run.checks
    if error:
        status = "error"
    elif all(c.ok for c in checks):
        status = "passed"
    else:
        status, exit_code = "failed", 1
    duration = round(time.monotonic() - started, 2)
    status_info = backend.status()
    summary = {
        "scenario": scenario.name,
        "status": status,
        "kernel": run.kernel.get("release") or status_info.kernel_release,
        "release": status_info.release,
        "accel": status_info.accel,
        "backend": status_info.backend,
        "lab": status_info.name,
        "run_id": bundle.run_id,
        "started": started_at.isoformat(timespec="seconds"),
        "duration_s": duration,
        "phases_s": phases.times,
        "expectations": [c.as_dict() for c in checks],
        "error": error,
    }
    bundle.write_json("summary.json", summary)
    bundle.write_junit(scenario.name, checks, error, duration)
    if (problem := try_write_report(bundle.path)) is not None:  # never raises
        console.warn(problem)
    return Outcome(status, bundle.path, checks, error, exit_code, phases.times)


class _Run:
    def __init__(self, settings: Settings, scenario: Scenario, bundle: ResultsBundle,
                 phases: _Phases) -> None:
        self.settings = settings
        self.scenario = scenario
        self.bundle = bundle
        self.phase = phases
        self.checks: list[Check] = []
        self.kernel: dict[str, Any] = {}
        self.steps_log: list[dict[str, object]] = []
        self.live: dict[str, dict[str, object]] = {fn: {} for fn in scenario.collect.live_text}

    # -- the run -------------------------------------------------------------------------

    def execute(self, ssh: Session, booted: Image | None) -> None:
        # The image the lab booted, even if the recipe changed since (and so its digest).
        image = booted or find_image(self.settings)
        if image is None:
            raise LabError("The lab's image is gone from the cache; run `invoke image.build`.",
                           code=2)
        # A scenario with per-kernel alternatives runs the one for the image's kernel.
        resolved = self.scenario.for_kernel(kernel_version(image.kernel_release))
        if resolved is not self.scenario:
            console.say(f"kernel {image.kernel_release}: using {resolved.describe_variant()}")
            self.scenario = resolved
            self.live = {fn: {} for fn in resolved.collect.live_text}
        repo = self.settings.bpf_dir.parent
        for probe in self.scenario.probes:
            if not (repo / probe.source).is_file():
                raise ScenarioAborted(
                    f"Probe {probe.name!r}: its source {probe.source} does not exist (relative "
                    f"to {repo}). Probe sources live under bpf/; fix `source` in "
                    f"{self.scenario.path.name}.")
            if not probe.source.startswith("bpf/"):
                raise ScenarioAborted(
                    f"Probe {probe.name!r}: {probe.source} is outside bpf/, which is what is "
                    "built and sent to the guest; move it under bpf/.")
        with self.phase("upload"):
            tarball = pack_sources(self.settings.bpf_dir)
            upload_sources(ssh, tarball)
        key = build_key(tarball, image.kernel_release, str(image.manifest["recipe_digest"]))
        build_dir = f"{GUEST_BUILD}/{key}"
        build_cache = self.settings.home / "builds" / f"{key}.tar"
        with self.phase("preflight+build"):
            restore_build(ssh, build_dir, build_cache)
            report = self._prepare(ssh, image, build_dir)
            if report["build"].get("cached") is False:
                save_build(ssh, build_dir, build_cache)
        loaders: list[RunningLoader] = []
        try:
            with self.phase("setup"):
                for step in self.scenario.setup:
                    result = self._step(ssh, step, "setup")
                    if result.exit_status != step.expect_exit or result.timed_out:
                        raise ScenarioAborted(
                            f"Setup step '{step.name}' exited {result.exit_status} "
                            f"(expected {step.expect_exit}): {result.err.strip()[:500]}")
            with self.phase("attach"):
                loaders = self._attach(ssh, build_dir)
                self._record_live(ssh, "peek", "attached")
            with self.phase("steps"):
                for step in self.scenario.steps:
                    result = self._step(ssh, step, "step")
                    self.checks += check_step(step, result.exit_status, result.out, result.err,
                                              result.timed_out)
            time.sleep(0.2)  # let the last ring-buffer records reach the loader
        finally:
            with self.phase("detach"):
                self._detach(ssh, loaders)
        with self.phase("collect"):
            finish = self._record_live(ssh, "finish", "after")
            trace = [str(line) for line in finish.get("trace", [])]
            self.bundle.write_text("trace_pipe.txt", "".join(f"{line}\n" for line in trace))
            events = self._events(ssh, loaders, build_dir, report)
            self.bundle.write_jsonl("events.jsonl", events)
        self.checks += check_events(self.scenario.events, events)
        self.checks += check_trace(self.scenario.trace, trace)

    def _guest(self, ssh: Session, command: str, request: Mapping[str, object],
               timeout: float) -> dict[str, Any]:
        result = ssh.run(["python3", f"{GUEST_SRC}/guest/fentry_lab_guest.py", command],
                         stdin=json.dumps(request).encode(), timeout=timeout)
        if result.exit_status != 0:
            raise LabError(f"The lab's guest helper failed ({command}, exit "
                           f"{result.exit_status}): {result.err.strip()[-2000:]}", code=2)
        value = json.loads(result.out)
        assert isinstance(value, dict)
        return value

    def _prepare(self, ssh: Session, image: Image, build_dir: str) -> dict[str, Any]:
        sc = self.scenario
        cache = self.settings.home / "static" / image.build_id
        objdump = [fn for fn in sc.collect.objdump if not (cache / f"objdump-{fn}.txt").exists()]
        listings = [fn for fn in sc.collect.bpftrace_lv
                    if not (cache / f"bpftrace-lv-{fn}.txt").exists()]
        probes = [p for p in sc.probes if p.loader == "libbpf"]
        request = {
            "functions": list(sc.requires.functions),
            "objdump": objdump, "bpftrace": listings, "live": list(sc.collect.live_text),
            "build": {"src": f"{GUEST_SRC}/bpf", "out": build_dir,
                      "targets": build_targets(probes, build_dir)},
        }
        report = self._guest(ssh, "prepare", request, timeout=600)
        self.kernel = report["kernel"]
        self.bundle.write_json("kernel.json", {**report["kernel"],
                                               "image_build_id": image.build_id,
                                               "image": str(image.directory)})
        cache.mkdir(parents=True, exist_ok=True)
        for fn, text in report.get("objdump", {}).items():
            (cache / f"objdump-{fn}.txt").write_text(text)
        for fn, text in report.get("bpftrace_lv", {}).items():
            (cache / f"bpftrace-lv-{fn}.txt").write_text(text)
        for fn in sc.collect.objdump:
            self.bundle.write_text(f"objdump-{fn}.txt", (cache / f"objdump-{fn}.txt").read_text())
        self.bundle.write_text("bpftrace-lv.txt", "\n".join(
            (cache / f"bpftrace-lv-{fn}.txt").read_text() for fn in sc.collect.bpftrace_lv))
        for fn, value in report["live_before"].items():
            self.live[fn]["before"] = value
        self.bundle.write_json("live-text.json", self.live)
        self._preflight(report)
        build = report["build"]
        self.bundle.write_text("build.log", str(build.get("log", "")))
        if not build.get("ok"):
            raise ScenarioAborted(f"Building the probes failed in the guest (kernel "
                                  f"{self.kernel['release']}); see build.log:\n"
                                  f"{str(build.get('log', ''))[-3000:]}")
        if build.get("cached") is not None:
            console.say("probes " + ("reused from the build cache" if build["cached"]
                                     else "built in the guest"))
        return report

    def _preflight(self, report: Mapping[str, Any]) -> None:
        kernel = report["kernel"]
        release = kernel["release"]
        need = self.scenario.requires.kernel
        have = tuple(kernel["version"])
        problems = []
        if have < need:
            problems.append(f"kernel {release} is older than the {'.'.join(map(str, need))} "
                            "this scenario needs")
        if not kernel["btf"]:
            problems.append(f"kernel {release} has no BTF (/sys/kernel/btf/vmlinux), which "
                            "fentry/fexit need")
        for fn, ok in report["traceable"].items():
            if not ok:
                where = ("exists but is not traceable (not in available_filter_functions)"
                         if report["in_kallsyms"].get(fn) else "is absent")
                problems.append(f"`{fn}` {where} in {release}")
        if kernel["build_id_running"] != kernel["build_id_debug_vmlinux"]:
            problems.append(f"the debug vmlinux's build ID {kernel['build_id_debug_vmlinux']} "
                            f"differs from the running kernel's {kernel['build_id_running']}")
        if problems:
            raise ScenarioAborted(
                f"Preflight failed for scenario {self.scenario.name!r}: "
                + "; ".join(problems) + ". Nothing was loaded. Fix: use a release whose kernel "
                "has what the scenario needs (the default, --release trixie, runs 6.12), or "
                "change the scenario's `requires`.")

    def _step(self, ssh: Session, step: Step, kind: str) -> CommandResult:
        argv = guest_command(step)
        result = ssh.run(argv, timeout=step.timeout)
        index = len(self.steps_log)
        for stream, data in (("stdout", result.stdout), ("stderr", result.stderr)):
            if len(data) > STEP_TEXT_LIMIT:
                self.bundle.write_text(f"steps/{index}.{stream}", data.decode("utf-8", "replace"))
        self.steps_log.append({
            "kind": kind, "name": step.name, "argv": list(step.command), "user": step.user,
            "exit_status": result.exit_status, "timed_out": result.timed_out,
            "stdout": _bounded(result.stdout, result.stdout_dropped),
            "stderr": _bounded(result.stderr, result.stderr_dropped),
            "duration_s": round(result.duration_s, 3),
        })
        self.bundle.write_jsonl("steps.jsonl", self.steps_log)
        return result

    def _attach(self, ssh: Session, build_dir: str) -> list[RunningLoader]:
        groups: dict[str, list[Any]] = {}
        for probe in self.scenario.probes:
            key = "libbpf" if probe.loader == "libbpf" else f"bcc:{probe.name}"
            groups.setdefault(key, []).append(probe)
        loaders: list[RunningLoader] = []
        slow = 4.0 if self.settings.accel != "kvm" else 1.0
        try:
            for probes in groups.values():
                loader = start_loader(ssh, tuple(probes), build_dir)
                loaders.append(loader)
                loader.wait_ready(timeout=(120.0 if probes[0].loader == "bcc" else 20.0) * slow)
        except ProbeLoadError as exc:
            self._detach(ssh, loaders)
            raise ScenarioAborted(str(exc)) from None
        return loaders

    def _detach(self, ssh: Session, loaders: list[RunningLoader]) -> None:
        for loader in loaders:
            with contextlib.suppress(Exception):
                loader.stop(ssh, timeout=10.0)
        if loaders:
            self.bundle.write_text("loader.log", "".join(loader.log for loader in loaders))

    def _record_live(self, ssh: Session, command: str, phase: str) -> dict[str, Any]:
        result = self._guest(ssh, command, {"live": list(self.scenario.collect.live_text)},
                             timeout=120)
        for fn, value in result["live"].items():
            self.live[fn][phase] = value
        self.bundle.write_json("live-text.json", self.live)
        return result

    def _events(self, ssh: Session, loaders: list[RunningLoader], build_dir: str,
                report: Mapping[str, Any]) -> list[dict[str, object]]:
        decoders: dict[str, EventDecoder] = {}
        by_object: dict[str, str] = {}
        cache = self.settings.home / "btf" / build_dir.rsplit("/", 1)[-1]
        for loader in loaders:
            for probe in loader.probes:
                if probe.loader == "libbpf":
                    stem = object_stem(probe)
                    obj = f"{stem.rsplit('/', 1)[-1]}.bpf.o"
                    by_object[obj] = probe.name
                    try:
                        doc = fetch_btf(ssh, f"{build_dir}/{stem}.btf.json",
                                        cache / f"{stem.replace('/', '_')}.btf.json")
                        decoders[obj] = EventDecoder.from_btf_json(doc)
                    except BtfError as exc:
                        console.warn(f"probe {probe.name}: no structured events ({exc})")
                else:
                    by_object[Path(probe.source).name] = probe.name
        events: list[dict[str, object]] = []
        for loader in loaders:
            for line in loader.stdout.decode("utf-8", "replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                obj = str(record.get("object", ""))
                if "event" in record:
                    fields = dict(record["event"])
                elif obj in decoders:
                    fields = decoders[obj].decode(bytes.fromhex(str(record["data"])))
                else:
                    continue
                events.append({"probe_name": by_object.get(obj, obj), **fields})
        return events


def _bounded(data: bytes, dropped: int) -> str:
    text = data[:STEP_TEXT_LIMIT].decode("utf-8", "replace")
    cut = len(data) - STEP_TEXT_LIMIT + dropped if len(data) > STEP_TEXT_LIMIT else dropped
    if cut > 0:
        text += f"\n[fentry-lab: {cut} more bytes not shown]"
    return text
