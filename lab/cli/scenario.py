"""scenario.* tasks: run, list, validate, show; `scenario run NAME` works as words too."""

from __future__ import annotations

from collections.abc import Mapping

from invoke.context import Context
from invoke.exceptions import Exit

from lab.cli.common import (
    LAB_FLAGS,
    SCENARIOS_FLAG,
    emit,
    find_scenario_path,
    friendly_errors,
    lab_task,
    load_checked,
    settings_from,
)
from lab.cli.words import word_task
from lab.errors import UsageError

NAME_HELP = "Scenario name (scenarios/NAME.yaml, yours first) or a .yaml file"
VERBS_WITH_NAME = {"run", "validate", "show"}
VERBS = (*sorted(VERBS_WITH_NAME), "list")


@lab_task(klass=word_task(VERBS_WITH_NAME), positional=["scenario", "word"], help={
    "scenario": NAME_HELP, "word": "(the name, in the word form `scenario run NAME`)",
    "scenarios": SCENARIOS_FLAG, "json": "Print the run's summary.json (with `scenario list`:"
    " the scenarios as JSON) instead of text",
    "fresh": "Reset the lab to its ready snapshot first (see lab.reset)", **LAB_FLAGS})
def run(c: Context, scenario: str, word: str | None = None, name: str | None = None,
        release: str | None = None, backend: str | None = None, accel: str | None = None,
        cpus: int | None = None, memory: int | None = None, scenarios: str | None = None,
        json: bool = False, fresh: bool = False) -> None:
    """Run a scenario on the lab (brought up if needed) and check its expectations.

    Examples: invoke scenario run acl-basic; invoke scenario.run ./mine.yaml --name two
    """
    lab_flags = {"name": name, "release": release, "backend": backend, "accel": accel,
                 "cpus": cpus, "memory": memory}
    with friendly_errors():
        if word is None or word == "":
            _run(c, scenario, scenarios, lab_flags, json, fresh)
            return
        verb = scenario
        given = [f"--{key}" for key, value in lab_flags.items() if value is not None]
        if verb != "run" and given:
            raise UsageError(f"`scenario {verb}` takes no {', '.join(given)}: those are for "
                             "`scenario run`.")
    if verb == "run":
        run(c, word, name=name, release=release, backend=backend, accel=accel, cpus=cpus,
            memory=memory, scenarios=scenarios, json=json, fresh=fresh)
    elif verb == "validate":
        validate(c, word, scenarios=scenarios)
    else:
        show(c, word, scenarios=scenarios)


def _run(c: Context, scenario: str, scenarios: str | None,
         lab_flags: Mapping[str, object], json: bool, fresh: bool = False) -> None:
    if scenario == "list":
        list_(c, json=json, scenarios=scenarios)
        return
    if scenario in VERBS_WITH_NAME:
        raise UsageError(f"`scenario {scenario}` needs a scenario name, e.g. "
                         f"`scenario {scenario} acl-basic` (see `scenario list`).")
    from lab import views
    from lab.run.runner import run_scenario
    from lab.vm import backend_for

    settings = settings_from(c, scenarios=scenarios, **lab_flags)
    path = find_scenario_path(scenario, settings)
    loaded = load_checked(path, settings)  # an invalid scenario: ScenarioError, exit 1
    backend = backend_for(settings)
    if fresh:  # every run from the same pristine guest
        backend.reset()
    outcome = run_scenario(settings, loaded, backend)
    summary = outcome.bundle / "summary.json"
    if json and summary.is_file():
        emit(summary.read_text(), end="")
    else:
        emit(views.outcome_text(loaded.name, outcome))
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


@lab_task(help={"json": "Print JSON (one object per scenario) instead of a table",
                "scenarios": SCENARIOS_FLAG})
def list_(c: Context, json: bool = False, scenarios: str | None = None) -> None:
    """List the scenarios (yours, then the shipped ones) with their target functions."""
    from lab import views

    with friendly_errors():
        settings = settings_from(c, scenarios=scenarios)
        rows = views.scenario_rows(settings.scenario_dirs)
        emit(views.scenarios_json(rows) if json else views.scenarios_table(rows))


@lab_task(positional=["scenario"], help={"scenario": NAME_HELP, "scenarios": SCENARIOS_FLAG})
def validate(c: Context, scenario: str, scenarios: str | None = None) -> None:
    """Check a scenario against the schema; exit 1 with file:line: path: message if invalid."""

    with friendly_errors():
        settings = settings_from(c, scenarios=scenarios)
        path = find_scenario_path(scenario, settings)
        load_checked(path, settings)
        emit(f"{path}: valid")


@lab_task(positional=["scenario"], help={"scenario": NAME_HELP, "scenarios": SCENARIOS_FLAG})
def show(c: Context, scenario: str, scenarios: str | None = None) -> None:
    """Print a scenario's file."""
    with friendly_errors():
        path = find_scenario_path(scenario, settings_from(c, scenarios=scenarios))
        emit(path.read_text(), end="")


@lab_task(positional=["scenario"], help={
    "scenario": "Name of the new scenario (scenarios/NAME.yaml, bpf/NAME/NAME.bpf.c)",
    "function": "The kernel function to probe (its signature comes from the lab's BTF)",
    "fexit": "Add an fexit program (the return value) beside the fentry one",
    "kprobe": "A kprobe/kretprobe pair instead of fentry/fexit",
    "name": LAB_FLAGS["name"], "release": LAB_FLAGS["release"]})
def new(c: Context, scenario: str, function: str = "", fexit: bool = False,
        kprobe: bool = False, name: str | None = None, release: str | None = None) -> None:
    """Make a scenario and a probe skeleton for a kernel function, ready to run.

    Example: invoke scenario.new my-write --function vfs_write --fexit
    """
    from lab.run.scaffold import check_names, new_scenario

    with friendly_errors():
        if not function:
            raise UsageError("`scenario.new` needs --function FUNCTION (the kernel function "
                             "to probe).")
        check_names(scenario, function)
        settings = settings_from(c, name=name, release=release)
        for path in new_scenario(settings, scenario, function, fexit=fexit, kprobe=kprobe):
            emit(f"wrote {path}")
        emit(f"next: edit its steps, then `invoke scenario run {scenario}`")


TASKS = {"run": run, "list": list_, "validate": validate, "show": show, "new": new}
DEFAULT = "run"
