"""results.* tasks: list the recorded runs, show (or open) a run's report."""

from __future__ import annotations

from invoke.context import Context

from lab.cli.common import emit, friendly_errors, lab_task, settings_from
from lab.errors import LabError


@lab_task()
def list_(c: Context) -> None:
    """List the recorded runs, newest last, with their report's path."""
    from lab import views
    from lab.results.report.listing import list_runs

    with friendly_errors():
        runs = list_runs(settings_from(c).results)
        if not runs:
            emit("no runs yet (run one with `invoke scenario run SCENARIO`)")
            return
        emit(views.table(("SCENARIO", "RUN", "STATUS", "REPORT"), [
            (r.scenario, r.run_id, r.status, r.report if r.report.exists() else "(none)")
            for r in runs]))


@lab_task(help={"run": "Run id, scenario (its newest run) or run folder (default: the newest)",
                "open": "Open the report in your browser"})
def show(c: Context, run: str | None = None, open: bool = False) -> None:
    """Print the path of a run's report.html (written now if missing); --open opens it.

    Example: invoke results.show --run acl-basic --open
    """
    from lab.results.report import write_report
    from lab.results.report.listing import find_run, open_in_browser

    with friendly_errors():
        entry = find_run(settings_from(c).results, run)
        if not entry.report.exists():
            try:
                if entry.kind == "matrix":
                    from lab.results.report.matrix import write_matrix_report
                    write_matrix_report(entry.path)
                else:
                    write_report(entry.path)
            except (OSError, ValueError) as exc:
                raise LabError(f"Could not write {entry.report}: {exc}. The run's files "
                               "are still there; check they are readable.") from None
        emit(str(entry.report))
        if open:
            emit(open_in_browser(entry.report))


TASKS = {"list": list_, "show": show}
