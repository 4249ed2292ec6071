"""Text a person reads: tables for images, labs and scenarios, and a run's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab.config import Settings
from lab.errors import LabError
from lab.image.build import Image
from lab.results.report.text import short_text
from lab.run.runner import Outcome
from lab.vm.base import LabStatus


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def images_table(images: Sequence[Image]) -> str:
    if not images:
        return "no cached images (build one with `invoke image.build`)"
    rows = []
    for img in images:
        disk = img.manifest.get("artefacts", {})
        size = disk.get("disk.qcow2", {}).get("size", 0) if isinstance(disk, dict) else 0
        rows.append((img.directory.name, img.release, img.kernel_release, img.build_id[:12],
                     img.manifest.get("built_at", ""), f"{size / 1024**2:.0f} MiB"))
    return table(("IMAGE", "RELEASE", "KERNEL", "BUILD ID", "BUILT", "DISK"), rows)


def lab_names(settings: Settings) -> list[str]:
    if not settings.labs_dir.is_dir():
        return []
    return sorted(d.name for d in settings.labs_dir.iterdir() if (d / "state.json").exists())


def _uptime(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def status_table(statuses: Sequence[LabStatus]) -> str:
    if not statuses:
        return "no labs (start one with `invoke lab.up`)"
    rows = [(s.name, s.backend, s.release or "-", s.kernel_release or "-", s.accel or "-",
             s.pid or "-", s.ssh_port or "-", _uptime(s.uptime_s), s.state) for s in statuses]
    return table(("NAME", "BACKEND", "RELEASE", "KERNEL", "ACCEL", "PID", "SSH PORT", "UPTIME",
                  "STATE"), rows)


def scenarios_table(scenarios_dir: Path) -> str:
    from lab.scenario.model import list_scenarios, load_scenario

    rows = []
    for path in list_scenarios(scenarios_dir):
        try:
            sc = load_scenario(path)
            functions = list(sc.requires.functions)
            for alt in sc.alternatives:  # other targets on other kernels
                functions += [fn for fn in alt.functions if fn not in functions]
            rows.append((sc.name, ", ".join(functions), sc.description))
        except LabError as exc:
            rows.append((path.stem, "-", f"INVALID: {exc}"))
    return table(("SCENARIO", "FUNCTIONS", "DESCRIPTION"), rows)


def outcome_text(name: str, outcome: Outcome) -> str:
    lines = [check.describe() for check in outcome.checks]
    try:  # the bytes and the calls the lab saw, as in report.html
        seen = short_text(outcome.bundle)
    except (OSError, ValueError) as exc:
        seen = f"(short report unavailable: {exc})"
    if seen:
        lines += ["", seen, ""]
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.phases.items())
    lines.append(f"scenario {name}: {outcome.status.upper()} ({phases})")
    lines.append(f"results: {outcome.bundle}")
    if (outcome.bundle / "report.html").exists():
        lines.append(f"report: {outcome.bundle / 'report.html'}")
    return "\n".join(lines)
