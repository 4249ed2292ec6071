"""lab.* tasks: up, down, destroy, status, ssh, ssh-config, logs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.exceptions import Exit

from lab.cli.common import (
    LAB_FLAGS,
    check_choice,
    emit,
    friendly_errors,
    lab_task,
    settings_from,
)
from lab.errors import LabError

if TYPE_CHECKING:
    from lab.ssh import SshTarget

NAME_AND_BACKEND = {"name": LAB_FLAGS["name"], "backend": LAB_FLAGS["backend"]}


def write_known_hosts(target: SshTarget, lab_dir: Path) -> Path:
    """The lab's own known_hosts (its pinned host key), for the printed ssh command."""
    path = lab_dir / "known_hosts"
    lab_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(target.known_hosts_line())
    return path


@lab_task(help=LAB_FLAGS)
def up(c: Context, name: str | None = None, release: str | None = None,
       backend: str | None = None, accel: str | None = None, cpus: int | None = None,
       memory: int | None = None) -> None:
    """Boot the lab VM (building its image first if needed) and wait for SSH.

    Prints an ssh command that pins the lab's host key. Example: invoke lab.up --name two
    """
    from lab import views
    from lab.vm import backend_for

    with friendly_errors():
        settings = settings_from(c, name=name, release=release, backend=backend, accel=accel,
                                 cpus=cpus, memory=memory)
        lab = backend_for(settings)
        target = lab.up().target
        known_hosts = write_known_hosts(target, lab.lab_dir)
        emit(views.ssh_command(target, known_hosts))


@lab_task(help=NAME_AND_BACKEND)
def down(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Power the lab off gracefully (its disk is kept)."""
    from lab.vm import backend_for

    with friendly_errors():
        backend_for(settings_from(c, name=name, backend=backend)).down()


@lab_task(help=NAME_AND_BACKEND)
def destroy(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Stop the lab and delete its disk and state."""
    from lab.vm import backend_for

    with friendly_errors():
        backend_for(settings_from(c, name=name, backend=backend)).destroy()


@lab_task(help={"name": "Show only this lab", "backend": LAB_FLAGS["backend"],
                "json": "Print JSON (one object per lab) instead of a table"})
def status(c: Context, name: str | None = None, backend: str | None = None,
           json: bool = False) -> None:
    """Show the labs: name, release, kernel, accelerator, pid, SSH port, uptime, state."""
    from lab import views
    from lab.vm import backend_for

    with friendly_errors():
        settings = settings_from(c, name=name, backend=backend)
        names = [settings.name] if name else backend_for(settings).names()
        statuses = [backend_for(settings_from(c, name=n, backend=backend)).status()
                    for n in names]
        emit(views.status_json(statuses) if json else views.status_table(statuses))


@lab_task(help={"name": LAB_FLAGS["name"],
                            "command": "Run this command and exit with its status",
                            "backend": LAB_FLAGS["backend"]})
def ssh(c: Context, name: str | None = None, command: str | None = None,
        backend: str | None = None) -> None:
    """Open a shell in the lab, or run one command (-c) and exit with its status."""
    from lab.shell import interactive_shell, run_command
    from lab.vm import backend_for

    with friendly_errors():
        lab = backend_for(settings_from(c, name=name, backend=backend))
        target = lab.ssh_target()
        if command is None:
            interactive_shell(target, lab.lab_dir)
            return
        code = run_command(target, command)
    if code:
        raise Exit(code=code)


# -c is the one short flag of the whole CLI (README: `lab.ssh -c CMD`).
ssh.short_flags = {"command": "c"}  # type: ignore[attr-defined]


@lab_task(help=NAME_AND_BACKEND)
def ssh_config(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Print an OpenSSH config block for the lab (host key pinned), for scp, rsync, editors.

    Example: invoke lab.ssh-config >> ~/.ssh/config; then `scp file fentry-lab-default:/tmp`
    """
    from lab import views
    from lab.vm import backend_for

    with friendly_errors():
        settings = settings_from(c, name=name, backend=backend)
        lab = backend_for(settings)
        target = lab.ssh_target()
        known_hosts = write_known_hosts(target, lab.lab_dir)
        emit(views.ssh_config(settings.name, target, known_hosts), end="")


@lab_task(help={"name": LAB_FLAGS["name"], "lines": "Show only the last N lines (0: all)",
                "backend": LAB_FLAGS["backend"]})
def logs(c: Context, name: str | None = None, lines: int = 0,
         backend: str | None = None) -> None:
    """Show the lab's serial console log."""
    from lab.vm import backend_for

    with friendly_errors():
        check_choice("lines", lines, 0, "0 shows the whole log")
        path = backend_for(settings_from(c, name=name, backend=backend)).serial_log()
        if not path.exists():
            raise LabError(f"No serial log yet at {path}: has the lab ever been up?")
        text = path.read_text(errors="replace").splitlines()
        emit("\n".join(text[-lines:] if lines else text))


@lab_task(help=NAME_AND_BACKEND)
def reset(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Put the lab back to its pristine ready snapshot (memory and disk) in seconds."""
    from lab.vm import backend_for

    with friendly_errors():
        backend_for(settings_from(c, name=name, backend=backend)).reset()


TASKS = {"up": up, "down": down, "status": status, "ssh": ssh, "ssh-config": ssh_config,
         "logs": logs, "reset": reset, "destroy": destroy}
