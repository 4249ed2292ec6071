"""bench.* tasks: what fentry, fexit, kprobe and friends cost per call (lab/bench)."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from lab.cli.common import LAB_FLAGS, emit, friendly_errors, lab_task, settings_from


@lab_task(help={"function": "Kernel function to probe (default __x64_sys_getpgid; "
                            "__set_task_comm uses a prctl(PR_SET_NAME) loop)",
                "samples": "Rounds (default 5) of one sample of about a second per mode",
                "releases": "Compare kernels: comma-separated releases, one lab each "
                            "(destroyed afterwards)",
                "name": LAB_FLAGS["name"], "release": LAB_FLAGS["release"],
                "accel": LAB_FLAGS["accel"]})
def probes(c: Context, function: str = "__x64_sys_getpgid", samples: int = 5,
           releases: str | None = None, name: str | None = None,
           release: str | None = None, accel: str | None = None) -> None:
    """Measure what fentry, fexit, kprobe, kretprobe... add per call of one kernel function.

    Example: invoke bench.probes --samples 5 (results/bench/<run id>/bench.md, .json, .svg)
    """
    from lab.bench.probes import run_bench

    with friendly_errors():
        settings = settings_from(c, name=name, release=release, accel=accel)
        wanted = [r.strip() for r in (releases or "").split(",") if r.strip()]
        outcome = run_bench(settings, function=function, samples=samples, releases=wanted)
        emit(outcome.text, end="")
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


TASKS = {"probes": probes}
