"""Text a person reads: tables for images, labs and scenarios, and a run's outcome."""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from lab.config import Settings
from lab.errors import LabError
from lab.image.build import Image
from lab.results.report.text import short_text
from lab.run.runner import Outcome
from lab.ssh import SshTarget
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
    text = table(("NAME", "BACKEND", "RELEASE", "KERNEL", "ACCEL", "PID", "SSH PORT", "UPTIME",
                  "STATE"), rows)
    problems = [f"{s.name}: {s.state}: {s.problem}" for s in statuses if s.problem]
    return "\n".join([text, *problems])


def scenario_rows(scenario_dirs: Sequence[Path]) -> list[dict[str, object]]:
    """One row per scenario name, the first directory's file winning (the user's)."""
    from lab.scenario.load import list_scenarios, load_scenario

    rows: dict[str, dict[str, object]] = {}
    for directory in scenario_dirs:
        for path in list_scenarios(directory):
            if path.stem in rows:
                continue
            try:
                sc = load_scenario(path)
                functions = list(sc.requires.functions)
                for alt in sc.alternatives:  # other targets on other kernels
                    functions += [fn for fn in alt.functions if fn not in functions]
                rows[path.stem] = {"name": sc.name, "functions": functions,
                                   "description": sc.description, "path": str(path),
                                   "valid": True}
            except LabError as exc:
                rows[path.stem] = {"name": path.stem, "functions": [],
                                   "description": f"INVALID: {exc}", "path": str(path),
                                   "valid": False}
    return sorted(rows.values(), key=lambda row: str(row["name"]))


def scenarios_table(rows: Sequence[dict[str, object]]) -> str:
    if not rows:
        return "no scenarios (put NAME.yaml files in ./scenarios)"
    return table(("SCENARIO", "FUNCTIONS", "DESCRIPTION"),
                 [(r["name"], ", ".join(map(str, r["functions"])) or "-",  # type: ignore[call-overload]
                   r["description"]) for r in rows])


def scenarios_json(rows: Sequence[dict[str, object]]) -> str:
    return json.dumps(list(rows), indent=2)


def images_json(images: Sequence[Image]) -> str:
    return json.dumps([{"image": img.directory.name, "path": str(img.directory),
                        "release": img.release, "kernel": img.kernel_release,
                        "build_id": img.build_id, "built": img.manifest.get("built_at", "")}
                       for img in images], indent=2)


def status_json(statuses: Sequence[LabStatus]) -> str:
    return json.dumps([dataclasses.asdict(s) for s in statuses], indent=2)


def ssh_options(target: SshTarget, known_hosts: Path) -> list[str]:
    """The OpenSSH options that pin the lab's host key and use only the lab's own key."""
    return ["-p", str(target.port), "-i", str(target.key_file),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes"]


def ssh_command(target: SshTarget, known_hosts: Path) -> str:
    """The ssh command lab.up prints: copy-paste safe, host key pinned (no TOFU)."""
    return shlex.join(["ssh", *ssh_options(target, known_hosts),
                       f"{target.user}@{target.host}"])


def ssh_config(name: str, target: SshTarget, known_hosts: Path) -> str:
    """An OpenSSH `Host fentry-lab-NAME` block for scp, rsync and editors."""
    def quoted(path: Path) -> str:
        return f'"{path}"' if " " in str(path) else str(path)

    return "\n".join([
        f"Host fentry-lab-{name}",
        f"    HostName {target.host}",
        f"    Port {target.port}",
        f"    User {target.user}",
        f"    IdentityFile {quoted(target.key_file)}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {quoted(known_hosts)}",
        "    StrictHostKeyChecking yes",
        "    PasswordAuthentication no",
        "",
    ])


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
