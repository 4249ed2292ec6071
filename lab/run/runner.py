"""One scenario run: preflight -> build -> setup -> attach -> steps -> detach -> collect -> verify.

The phases are a list of steps, each with an optional cleanup that runs (in reverse order)
whatever happens after it succeeded: detach is attach's cleanup (little-vm-helper's
Step{Do, Cleanup}). Everything collected is written into the results bundle as soon as it
is known; summary.json exists from the start (``status: running``) and is replaced at the
end; on any failure the probes are detached, summary.json says "error" with the reason, and
the lab stays up and usable for the next run. Runs on one lab are serialized by a lock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from lab import console
from lab.config import Settings
from lab.errors import (
    Interrupted,
    LabError,
    LabFailure,
    PreflightError,
    ProbeLoadError,
    ScenarioError,
)
from lab.image.build import Image, find_image, read_image
from lab.results.bundle import ResultsBundle
from lab.results.check import Check
from lab.results.report import try_write_report
from lab.run import own
from lab.run.access import check_release, connect_up_lab, log_size, run_lock, with_serial
from lab.run.decode import Decoded
from lab.run.expect import check_events, check_step, check_trace
from lab.run.expect_more import check_maps, check_output, without_lab_processes
from lab.run.guest import (
    DISK_FULL,
    Facts,
    GuestHelper,
    LiveReply,
    StaticCache,
    guest_disk_full,
    known_functions,
)
from lab.run.phases import Phase, Phases
from lab.run.preflight import preflight_problems
from lab.run.probes import (
    GUEST_BUILD,
    GUEST_SRC,
    RunningLoader,
    build_key,
    build_targets,
    pack_sources,
    save_build,
    start_loader,
    upload_sources,
)
from lab.run.tools import RunningTool
from lab.scenario.model import Probe, Scenario, Step, kernel_version
from lab.ssh import CommandResult, Session
from lab.vm.accel import Accel
from lab.vm.base import Backend, LabStatus

STEP_TEXT_LIMIT = 64 * 1024  # per stream in steps.jsonl; full output goes to steps/
__all__ = ["GUEST_SRC", "Outcome", "guest_command", "run_scenario"]


@dataclass
class Outcome:
    status: str  # passed | failed | error
    bundle: Path
    checks: list[Check]
    error: str | None = None
    exit_code: int = 0
    phases: dict[str, float] = field(default_factory=dict)


def guest_command(step: Step) -> list[str]:
    """The argv that runs a step in the guest as its user (root's session runs runuser)."""
    if step.user == "root":
        return list(step.command)
    return ["runuser", "-u", step.user, "--", *step.command]


def run_scenario(settings: Settings, scenario: Scenario, backend: Backend) -> Outcome:
    """Run one scenario on the lab (brought up if needed); never raises a LabError."""
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    phases = Phases()
    bundle: ResultsBundle | None = None
    run: _Run | None = None
    error: str | None = None
    exit_code = 0
    status_info: LabStatus | None = None
    try:
        bundle = ResultsBundle(settings.results, scenario.name, {
            "lab": settings.name, "release": settings.release,
            "started": started_at.isoformat(timespec="seconds")})
        run = _Run(settings, scenario, bundle, phases)
        with run_lock(settings, backend):
            before = backend.status(probe=False)  # no SSH
            check_release(settings, before)
            with phases("lab"):
                session = connect_up_lab(backend, before)
                if session is None:
                    session = Session(backend.up().target)
                    session.connect()
                status_info = backend.status(probe=False)
            check_release(settings, status_info)
            run.slowdown = Accel(status_info.accel, "").slowdown
            serial_at = log_size(backend.serial_log())
            try:
                with contextlib.closing(session) as ssh:
                    run.execute(ssh, read_image(Path(status_info.image))
                                if status_info.image else None)
            except LabError as exc:
                if exc.code != LabFailure.default_code:
                    raise
                # The SSH layer's "connection lost" and the like: name a panic if there was one.
                raise LabFailure(with_serial(str(exc), backend.serial_log(), serial_at)) \
                    from None
            except (OSError, paramiko.SSHException, EOFError) as exc:
                raise LabFailure(with_serial(
                    f"The SSH connection to the lab failed: {exc}.", backend.serial_log(),
                    serial_at)) from None
    except LabError as exc:
        error, exit_code = str(exc), exc.code
    except KeyboardInterrupt:
        error, exit_code = "interrupted (Ctrl-C)", Interrupted.default_code
    if bundle is None:  # nothing could be written: the error says why
        raise LabFailure(error or "The results bundle could not be created.")
    checks = run.checks if run else []
    if error:
        status = "error"
    elif all(c.ok for c in checks):
        status = "passed"
    else:
        status, exit_code = "failed", 1
    duration = round(time.monotonic() - started, 2)
    with contextlib.suppress(LabError, OSError):
        status_info = status_info or backend.status(probe=False)
    summary = {
        "scenario": scenario.name,
        "status": status,
        "kernel": (run.kernel_release if run else "") or
                  (status_info.kernel_release if status_info else None),
        "release": status_info.release if status_info else settings.release,
        "accel": status_info.accel if status_info else None,
        "backend": status_info.backend if status_info else settings.backend,
        "lab": settings.name,
        "run_id": bundle.run_id,
        "started": started_at.isoformat(timespec="seconds"),
        "duration_s": duration,
        "phases_s": phases.times,
        "expectations": [c.as_dict() for c in checks],
        "error": error,
    }
    try:
        bundle.write_json("summary.json", summary)
        bundle.write_junit(scenario.name, checks, error, duration)
    except LabFailure as exc:
        error = f"{error + ' ' if error else ''}{exc}"
        return Outcome("error", bundle.path, checks, error, exc.code, phases.times)
    if (problem := try_write_report(bundle.path)) is not None:  # never raises
        console.warn(problem)
    return Outcome(status, bundle.path, checks, error, exit_code, phases.times)


class _Run:
    def __init__(self, settings: Settings, scenario: Scenario, bundle: ResultsBundle,
                 phases: Phases) -> None:
        self.settings = settings
        self.scenario = scenario
        self.bundle = bundle
        self.phases = phases
        self.slowdown = 4.0
        self.checks: list[Check] = []
        self.kernel_release = ""
        self.steps_log: list[dict[str, object]] = []
        self.live: dict[str, dict[str, object]] = {fn: {} for fn in scenario.collect.live_text}
        self.loaders: list[RunningLoader] = []
        self.tools: list[RunningTool] = []
        self.trace: list[str] = []
        self.peeking: concurrent.futures.Future[None] | None = None

    # -- the run -------------------------------------------------------------------------

    def execute(self, ssh: Session, booted: Image | None) -> None:
        with GuestHelper(ssh) as guest:  # one helper process in the guest for the run
            self._execute(ssh, guest, booted)

    def _execute(self, ssh: Session, guest: GuestHelper, booted: Image | None) -> None:
        # The image the lab booted, even if the recipe changed since (and so its digest).
        image = booted or find_image(self.settings)
        if image is None:
            raise LabFailure("The lab's image is gone from the cache; run `invoke image.build`.")
        # A scenario with per-kernel alternatives runs the one for the image's kernel.
        resolved = self.scenario.for_kernel(kernel_version(image.kernel_release))
        if resolved is not self.scenario:
            console.say(f"kernel {image.kernel_release}: using {resolved.describe_variant()}")
            self.scenario = resolved
            self.live = {fn: {} for fn in resolved.collect.live_text}
        # The user's probes first, then the shipped ones (lab.config.Settings.bpf_dirs).
        tarball = pack_sources(self.settings.bpf_dirs, self.scenario.probes)
        key = build_key(tarball, image.kernel_release, str(image.manifest["recipe_digest"]))
        build_dir = f"{GUEST_BUILD}/{key}"
        build_cache = self.settings.home / "builds" / f"{key}.tar"
        facts: list[Facts] = []

        def prepare() -> None:
            try:
                facts.append(self._prepare(guest, image, build_dir))
            except (ProbeLoadError, LabFailure):
                # A failed build (a full disk, say) may leave truncated files that the next
                # run would trust: start that one from scratch.
                with contextlib.suppress(LabError):
                    ssh.run(["rm", "-rf", build_dir], timeout=60)
                raise
            if facts[0].build.cached is False:
                save_build(ssh, build_dir, build_cache)
            own.build_tools(ssh, self.scenario.probes, self.slowdown, self.bundle)

        def setup() -> None:
            for step in self.scenario.setup:
                result = self._step(ssh, step, "setup")
                if result.timed_out:
                    raise ScenarioError(f"Setup step '{step.name}' timed out after "
                                        f"{step.timeout:g} s: {result.err.strip()[:500]}")
                if result.exit_status != step.expect_exit:
                    raise ScenarioError(
                        f"Setup step '{step.name}' exited {result.exit_status} (expected "
                        f"{step.expect_exit}): {result.err.strip()[:500] or '(no stderr)'}")

        def attach() -> None:
            try:
                self._attach(ssh, build_dir)
                self.tools = own.start_tools(ssh, self.scenario.probes, self.slowdown)
            except BaseException:  # a half attach: detach what did, keep the loader's log
                self._detach(ssh)
                raise
            # The live bytes while attached are read beside the steps (on its own SSH
            # channel: a second of guest time that no step waits for), before detaching.
            live, known = list(self.scenario.collect.live_text), self._known()
            self.peeking = _in_background(
                lambda: self._record_live(guest.peek(live, known), "attached"))

        def steps() -> None:
            for step in self.scenario.steps:
                result = self._step(ssh, step, "step")
                self.checks += check_step(step, result.exit_status, result.out, result.err,
                                          result.timed_out)
            self._peeked()

        self.phases.run([
            Phase("upload", lambda: upload_sources(ssh, tarball, build_dir, build_cache)),
            Phase("preflight+build", prepare),
            Phase("setup", setup),
            # Detaching closes the loaders' stdin: they drain their ring buffers and exit.
            Phase("attach", attach, cleanup=lambda: self._detach(ssh)),
            Phase("steps", steps),
        ])
        with self.phases("collect"):
            finish = guest.finish(list(self.scenario.collect.live_text), self._known())
            self._record_live(finish, "after")
            self.trace = list(finish.trace)
            self.bundle.write_text("trace_pipe.txt", "".join(f"{t}\n" for t in self.trace))
            decoded = self._events(ssh, build_dir)
        events = decoded.events if self.scenario.include_lab_processes else \
            without_lab_processes(decoded.events)
        self.checks += check_events(self.scenario.events, events)
        self.checks += check_trace(self.scenario.trace, self.trace)
        self.checks += check_maps(self.scenario.maps, decoded.maps)
        self.checks += check_output(self.scenario.output,
                                    {t.probe_name: t.output_lines for t in self.tools})

    def _prepare(self, guest: GuestHelper, image: Image, build_dir: str) -> Facts:
        sc = self.scenario
        cache = StaticCache(self.settings.home, image.build_id)
        probes = [p for p in sc.probes if p.loader == "libbpf"]
        request: dict[str, object] = {
            "functions": list(sc.requires.functions),
            "objdump": cache.missing("objdump", sc.collect.objdump),
            "bpftrace": cache.missing("bpftrace-lv", sc.collect.bpftrace_lv),
            "live": list(sc.collect.live_text),
            "build": {"src": f"{GUEST_SRC}/bpf", "out": build_dir,
                      "targets": build_targets(probes, build_dir)},
        }
        tools = cache.tools(image)  # fixed with the image's build: asked once, then cached
        request["tools"] = tools is None
        facts = guest.prepare(request)
        self.kernel_release = facts.kernel.release
        if tools is None:
            tools = cache.store_tools(image, facts.kernel.raw.get("tools"))
        self.bundle.write_json("kernel.json", {**facts.kernel.raw, "tools": tools,
                                               "image_build_id": image.build_id,
                                               "image": str(image.directory)})
        cache.store(facts)
        for fn in sc.collect.objdump:
            self.bundle.write_text(f"objdump-{fn}.txt", cache.read("objdump", fn))
        self.bundle.write_text("bpftrace-lv.txt", "\n".join(
            cache.read("bpftrace-lv", fn) for fn in sc.collect.bpftrace_lv))
        for fn, value in facts.live_before.items():
            self.live.setdefault(fn, {})["before"] = value
        self.bundle.write_json("live-text.json", self.live)
        problems = preflight_problems(sc, facts) + own.requirement_problems(
            guest.ssh, sc.requires, facts.kernel.release)
        if problems:
            raise PreflightError(
                f"Preflight failed for scenario {sc.name!r}: " + "; ".join(problems)
                + ". Nothing was loaded. Fix: use a release whose kernel has what the "
                "scenario needs (the default, --release trixie, runs 6.12), or change the "
                "scenario's `requires`.")
        self.bundle.write_text("build.log", facts.build.log)
        if not facts.build.ok:
            if DISK_FULL in facts.build.log:
                raise guest_disk_full("Building the probes failed")
            raise ProbeLoadError(f"Building the probes failed in the guest (kernel "
                                 f"{facts.kernel.release}); see build.log:\n"
                                 f"{facts.build.log[-3000:]}")
        if facts.build.cached is not None:
            console.say("probes " + ("reused from the build cache" if facts.build.cached
                                     else "built in the guest"))
        return facts

    def _step(self, ssh: Session, step: Step, kind: str) -> CommandResult:
        result = ssh.run(guest_command(step), timeout=step.timeout)
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

    def _attach(self, ssh: Session, build_dir: str) -> None:
        options = own.loader_options(ssh, self.scenario.probes, build_dir, self.settings.home)
        for group in self._groups():
            loader = start_loader(ssh, group, build_dir, options)
            self.loaders.append(loader)
            loader.wait_ready(timeout=(120.0 if group[0].loader == "bcc" else 20.0)
                              * self.slowdown)

    def _groups(self) -> list[tuple[Probe, ...]]:
        """Probes that share one loader: all libbpf ones together, each BCC script alone."""
        groups: dict[str, list[Probe]] = {}
        for probe in self.scenario.probes:
            if probe.loader in own.TOOL_LOADERS:
                continue  # they bring their own loader (own.start_tools)
            key = "libbpf" if probe.loader == "libbpf" else f"bcc:{probe.name}"
            groups.setdefault(key, []).append(probe)
        return [tuple(g) for g in groups.values()]

    def _known(self) -> dict[str, dict[str, object]]:
        """What the first peek found that stays true for the run (see known_functions)."""
        return known_functions({fn: phases.get("before") for fn, phases in self.live.items()})

    def _peeked(self) -> None:
        """Wait for the peek made while attached (it records what it read as soon as it has
        it); this raises what it raised."""
        peeking, self.peeking = self.peeking, None
        if peeking is not None:
            peeking.result()

    def _detach(self, ssh: Session) -> None:
        with contextlib.suppress(LabError, OSError, paramiko.SSHException, EOFError):
            self._peeked()  # the steps failed before waiting: the bytes must be read first
        own.stop_tools(ssh, self.tools, self.slowdown)
        for tool in self.tools:
            with contextlib.suppress(LabError):
                self.bundle.write_text(f"output/{tool.probe_name}.txt",
                                       tool.stdout.decode("utf-8", "replace"))
                self.bundle.write_text(f"output/{tool.probe_name}.stderr", tool.log)
        for loader in self.loaders:
            with contextlib.suppress(LabError, OSError, paramiko.SSHException, EOFError):
                loader.stop(ssh, timeout=10.0 * self.slowdown)
        if self.loaders:
            with contextlib.suppress(LabError):
                self.bundle.write_text("loader.log",
                                       "".join(loader.log for loader in self.loaders))

    def _record_live(self, reply: LiveReply, phase: str) -> None:
        for fn, value in reply.live.items():
            self.live.setdefault(fn, {})[phase] = value
        self.bundle.write_json("live-text.json", self.live)

    def _events(self, ssh: Session, build_dir: str) -> Decoded:
        decoded = own.decode(ssh, self.loaders, build_dir, self.settings.home)
        self.bundle.write_jsonl("events.jsonl", decoded.events)
        if decoded.maps:
            self.bundle.write_json("maps.json", decoded.maps)
        if decoded.notes or decoded.lost:
            self.bundle.write_json("records-notes.json",
                                   {"notes": decoded.notes, "lost": decoded.lost})
            for note in decoded.notes:
                console.warn(note)
        return decoded


def _in_background(work: Callable[[], None]) -> concurrent.futures.Future[None]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="peek")
    try:
        return pool.submit(work)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one job


def _bounded(data: bytes, dropped: int) -> str:
    text = data[:STEP_TEXT_LIMIT].decode("utf-8", "replace")
    cut = len(data) - STEP_TEXT_LIMIT + dropped if len(data) > STEP_TEXT_LIMIT else dropped
    if cut > 0:
        text += f"\n[fentry-lab: {cut} more bytes not shown]"
    return text

