"""matrix.* tasks: run (also as the words `matrix run SCENARIO`)."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from lab.cli.common import (
    LAB_FLAGS,
    SCENARIOS_FLAG,
    check_choice,
    emit,
    find_scenario_path,
    friendly_errors,
    lab_task,
    load_checked,
    settings_from,
)
from lab.cli.words import word_task
from lab.errors import UsageError

FLAGS = {
    "scenario": "Scenario name (scenarios/NAME.yaml) or file",
    "word": "(the name, in the word form `matrix run NAME`)",
    "releases": "Comma-separated releases (default: bullseye,bookworm,trixie)",
    "jobs": "Labs run at once (default 0: host cores + 1, at most one per release and as "
            "many as memory allows: all 3 on 2 cores, measured fastest under TCG)",
    "keep": "Leave the labs (matrix-RELEASE) up afterwards; the next matrix run reuses them",
    "accel": LAB_FLAGS["accel"],
    "cpus": LAB_FLAGS["cpus"],
    "memory": LAB_FLAGS["memory"],
    "scenarios": SCENARIOS_FLAG,
}


@lab_task(klass=word_task({"run"}), positional=["scenario", "word"], help=FLAGS)
def run(c: Context, scenario: str, word: str | None = None, releases: str | None = None,
        jobs: int = 0, keep: bool = False, accel: str | None = None, cpus: int | None = None,
        memory: int | None = None, scenarios: str | None = None) -> None:
    """Run a scenario on several Debian kernels and write a side-by-side table.

    Example: invoke matrix run acl-portable --releases bookworm,trixie
    """
    from lab.matrix.orchestrate import parse_releases, run_matrix

    with friendly_errors():
        if word:
            scenario = word  # `matrix run NAME`: the first word was the verb
        elif scenario == "run":
            raise UsageError("`matrix run` needs a scenario name, e.g. "
                             "`matrix run acl-portable`.")
        check_choice("jobs", jobs, 0, "0 picks from the host's cores and memory")
        settings = settings_from(c, accel=accel, cpus=cpus, memory=memory,
                                 scenarios=scenarios)
        path = find_scenario_path(scenario, settings)
        loaded = load_checked(path, settings)  # an invalid scenario: ScenarioError, exit 1
        result = run_matrix(settings, loaded, parse_releases(releases, settings.images_dir),
                            jobs=jobs or None, keep=keep)
        emit(result.markdown, end="")
        emit(f"\nmatrix: {result.path / 'matrix.md'}")
    if result.exit_code:
        raise Exit(code=result.exit_code)


TASKS = {"run": run}
DEFAULT = "run"
