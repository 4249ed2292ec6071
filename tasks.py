"""fentry-lab tasks: `invoke --list` shows them, `invoke --help TASK` their flags.

Thin on purpose: each task turns its flags into Settings and calls the library (lab/).
Failures end with a one-paragraph message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task, task

from lab import views as report
from lab.config import Settings, load_settings
from lab.errors import LabError

LAB_FLAGS = {
    "name": "Which lab (several can run at once; default: default)",
    "release": "Debian release of the image: trixie (default), bookworm, bullseye",
    "backend": "qemu (default) or vagrant",
    "accel": "auto (default: KVM only when really usable), kvm or tcg",
    "cpus": "vCPUs (default 2; under TCG 2 is fastest)",
    "memory": "guest memory in MiB (default 2048)",
}


def settings_from(c: Context, **flags: object) -> Settings:
    section = c.config.get("lab") or {}
    return load_settings(dict(section), flags)


@contextlib.contextmanager
def friendly_errors(interrupt_code: int = 130) -> Iterator[None]:
    try:
        yield
    except LabError as exc:
        raise Exit(f"fentry-lab: error: {exc}", code=exc.code) from None
    except KeyboardInterrupt:
        raise Exit("fentry-lab: interrupted; nothing half-made was kept.",
                   code=interrupt_code) from None


# -- image -------------------------------------------------------------------------------


@task(help={"release": LAB_FLAGS["release"],
            "force": "Rebuild even when the cached image is current",
            "mirror": "Debian mirror URL (default: the recipe's)"})
def image_build(c: Context, release: str | None = None, force: bool = False,
                mirror: str | None = None) -> None:
    """Build (or reuse) the lab image for a release."""
    from lab.image.build import build_image

    with friendly_errors():
        image = build_image(settings_from(c, release=release, mirror=mirror), force=force)
        print(image.directory)


@task
def image_list(c: Context) -> None:
    """List the cached images."""
    from lab.image.build import list_images

    with friendly_errors():
        print(report.images_table(list_images(settings_from(c))))


@task
def image_prune(c: Context) -> None:
    """Delete cached images that no current recipe builds and no lab uses."""
    from lab.image.build import prune_images

    with friendly_errors():
        removed = prune_images(settings_from(c))
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print("nothing to prune")


@task(help={"release": LAB_FLAGS["release"]})
def image_verify(c: Context, release: str | None = None) -> None:
    """Recompute the cached image's hashes and fail on any mismatch."""
    from lab.image.build import find_image, verify_image

    with friendly_errors():
        settings = settings_from(c, release=release)
        image = find_image(settings)
        if image is None:
            raise LabError(f"No cached image for {settings.release}: run `invoke image.build`.")
        problems = verify_image(image)
        if problems:
            raise LabError(f"Image {image.directory} does not match its manifest:\n  "
                           + "\n  ".join(problems)
                           + "\nRebuild it with `invoke image.build --force`.")
        print(f"image {image.directory.name}: all artefacts match the manifest")


@task(help={"release": LAB_FLAGS["release"],
            "force": "Make and add the box again even when Vagrant already has it",
            "remove": "Remove the release's fentry-lab boxes and their libvirt volumes instead"})
def image_box(c: Context, release: str | None = None, force: bool = False,
              remove: bool = False) -> None:
    """Turn the cached image into a Vagrant box (libvirt) and add it; then `vagrant up` works."""
    from lab.vm.vagrant.box import make_box, remove_boxes

    with friendly_errors():
        settings = settings_from(c, release=release)
        if remove:
            for box in remove_boxes(settings):
                print(f"removed {box.name}")
            return
        print(make_box(settings, force=force).name)


# -- lab ---------------------------------------------------------------------------------


@task(help=LAB_FLAGS)
def lab_up(c: Context, name: str | None = None, release: str | None = None,
           backend: str | None = None, accel: str | None = None, cpus: int | None = None,
           memory: int | None = None) -> None:
    """Boot the lab VM (building its image first if needed) and wait for SSH."""
    from lab.vm import backend_for

    with friendly_errors():
        settings = settings_from(c, name=name, release=release, backend=backend, accel=accel,
                                 cpus=cpus, memory=memory)
        target = backend_for(settings).up()
        print(f"ssh -p {target.port} -i {target.key_file} {target.user}@{target.host}")


@task(help={"name": LAB_FLAGS["name"], "backend": LAB_FLAGS["backend"]})
def lab_down(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Power the lab off gracefully (its disk is kept)."""
    from lab.vm import backend_for

    with friendly_errors():
        backend_for(settings_from(c, name=name, backend=backend)).down()


@task(help={"name": LAB_FLAGS["name"], "backend": LAB_FLAGS["backend"]})
def lab_destroy(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Stop the lab and delete its disk and state."""
    from lab.vm import backend_for

    with friendly_errors():
        backend_for(settings_from(c, name=name, backend=backend)).destroy()


@task(help={"name": "Show only this lab", "backend": LAB_FLAGS["backend"]})
def lab_status(c: Context, name: str | None = None, backend: str | None = None) -> None:
    """Show the labs: name, release, kernel, accelerator, pid, SSH port, uptime, state."""
    from lab.vm import backend_for

    with friendly_errors():
        settings = settings_from(c, backend=backend)
        if name:
            names = [name]
        elif settings.backend == "vagrant":
            from lab.vm.vagrant.backend import lab_names

            names = lab_names(settings)
        else:
            names = report.lab_names(settings)
        statuses = [backend_for(settings_from(c, name=n, backend=backend)).status()
                    for n in names]
        print(report.status_table(statuses))


@task(help={"name": LAB_FLAGS["name"], "command": "Run this command and exit with its status",
            "backend": LAB_FLAGS["backend"]})
def lab_ssh(c: Context, name: str | None = None, command: str | None = None,
            backend: str | None = None) -> None:
    """Open a shell in the lab, or run one command (-c) and exit with its status."""
    from lab.shell import interactive_shell, run_command
    from lab.vm import backend_for

    with friendly_errors():
        lab = backend_for(settings_from(c, name=name, backend=backend))
        target = lab.ssh_target()
        if command is None:
            interactive_shell(target, lab.serial_log().parent)
            return
        status = run_command(target, command)
    if status:
        raise Exit(code=status)


@task(help={"name": LAB_FLAGS["name"], "lines": "Show only the last N lines (0: all)",
            "backend": LAB_FLAGS["backend"]})
def lab_logs(c: Context, name: str | None = None, lines: int = 0,
             backend: str | None = None) -> None:
    """Show the lab's serial console log."""
    from lab.vm import backend_for

    with friendly_errors():
        path = backend_for(settings_from(c, name=name, backend=backend)).serial_log()
        if not path.exists():
            raise LabError(f"No serial log yet at {path}: has the lab ever been up?")
        text = path.read_text(errors="replace")
        shown = text.splitlines()[-lines:] if lines else text.splitlines()
        print("\n".join(shown))


# -- scenario ----------------------------------------------------------------------------


@task(positional=["scenario"], help={"scenario": "Scenario name (scenarios/NAME.yaml) or file",
                                      **LAB_FLAGS})
def scenario_run(c: Context, scenario: str, name: str | None = None,
                 release: str | None = None, backend: str | None = None,
                 accel: str | None = None, cpus: int | None = None,
                 memory: int | None = None) -> None:
    """Run a scenario on the lab (brought up if needed) and check its expectations."""
    from lab.run.runner import run_scenario
    from lab.scenario.model import find_scenario, load_scenario
    from lab.vm import backend_for

    with friendly_errors():
        settings = settings_from(c, name=name, release=release, backend=backend, accel=accel,
                                 cpus=cpus, memory=memory)
        try:
            loaded = load_scenario(find_scenario(scenario, settings.scenarios_dir))
        except LabError as exc:  # an invalid scenario is the user's to fix: exit 1
            raise LabError(str(exc), code=1) from None
        outcome = run_scenario(settings, loaded, backend_for(settings))
        print(report.outcome_text(loaded.name, outcome))
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


@task
def scenario_list(c: Context) -> None:
    """List the scenarios with their descriptions."""
    with friendly_errors():
        print(report.scenarios_table(settings_from(c).scenarios_dir))


@task(positional=["scenario"], help={"scenario": "Scenario name or file"})
def scenario_validate(c: Context, scenario: str) -> None:
    """Check a scenario against the schema; exit 1 with file:line: path: message if invalid."""
    from lab.scenario.model import find_scenario, load_scenario

    with friendly_errors():
        settings = settings_from(c)
        try:
            path = find_scenario(scenario, settings.scenarios_dir)
            load_scenario(path)
        except LabError as exc:
            raise LabError(str(exc), code=1) from None
        print(f"{path}: valid")


@task(positional=["scenario"], help={"scenario": "Scenario name or file"})
def scenario_show(c: Context, scenario: str) -> None:
    """Print a scenario's file."""
    from lab.scenario.model import find_scenario

    with friendly_errors():
        path = find_scenario(scenario, settings_from(c).scenarios_dir)
        print(path.read_text(), end="")


class _TargetArgument(Argument):
    """The dispatcher's second word: required after run/validate/show, absent after list.

    invoke eats a token as a positional argument while that argument's value is None and
    insists on a value at the end, so this argument reports "" once the action is list.
    """

    action: Argument

    @property
    def value(self) -> object:
        value = self._value if self._value is not None else self.default
        if value is None and self.action.value == "list":
            return ""
        return value

    @value.setter
    def value(self, arg: str) -> None:
        self.set_value(arg, cast=True)


class _DispatchTask(Task[Any]):
    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args: list[Argument] = super().get_arguments(ignore_unknown_help)
        by_name = {arg.name: arg for arg in args}
        target = by_name["scenario"]
        target.__class__ = _TargetArgument
        cast(_TargetArgument, target).action = by_name["action"]
        return args


SCENARIO_ACTIONS = {"run": scenario_run, "list": scenario_list, "validate": scenario_validate,
                    "show": scenario_show}


@task(klass=_DispatchTask, positional=["action", "scenario"], help={
    "action": "run, list, validate or show", "scenario": "Scenario name or file", **LAB_FLAGS})
def scenario_dispatch(c: Context, action: str, scenario: str | None = None,
                      name: str | None = None, release: str | None = None,
                      backend: str | None = None, accel: str | None = None,
                      cpus: int | None = None, memory: int | None = None) -> None:
    """`invoke scenario run NAME` (and list, validate, show) as words, not dotted names."""
    chosen = SCENARIO_ACTIONS.get(action)
    if chosen is None:
        raise Exit(f"fentry-lab: error: unknown scenario action {action!r}: use "
                   f"{', '.join(SCENARIO_ACTIONS)}.", code=1)
    if action == "list":
        scenario_list(c)
        return
    if not scenario:
        raise Exit(f"fentry-lab: error: `invoke scenario {action}` needs a scenario name "
                   "(see `invoke scenario list`).", code=1)
    if action == "run":
        scenario_run(c, scenario, name=name, release=release, backend=backend, accel=accel,
                     cpus=cpus, memory=memory)
    else:
        chosen(c, scenario)


# -- matrix ------------------------------------------------------------------------------

MATRIX_FLAGS = {
    "scenario": "Scenario name (scenarios/NAME.yaml) or file",
    "releases": "Comma-separated releases (default: bullseye,bookworm,trixie)",
    "jobs": "Labs run at once (default: host cores + 1, at most one per release and as "
            "many as memory allows: all 3 on 2 cores, measured fastest under TCG)",
    "keep": "Leave the labs (matrix-RELEASE) up afterwards; the next matrix run reuses them",
    "accel": LAB_FLAGS["accel"],
    "cpus": LAB_FLAGS["cpus"],
    "memory": LAB_FLAGS["memory"],
}


@task(positional=["scenario"], help=MATRIX_FLAGS)
def matrix_run(c: Context, scenario: str, releases: str | None = None, jobs: int = 0,
               keep: bool = False, accel: str | None = None, cpus: int | None = None,
               memory: int | None = None) -> None:
    """Run a scenario on several Debian kernels and write a side-by-side table."""
    from lab.matrix.orchestrate import parse_releases, run_matrix
    from lab.scenario.model import find_scenario, load_scenario

    with friendly_errors():
        settings = settings_from(c, accel=accel, cpus=cpus, memory=memory)
        try:
            loaded = load_scenario(find_scenario(scenario, settings.scenarios_dir))
        except LabError as exc:  # an invalid scenario is the user's to fix: exit 1
            raise LabError(str(exc), code=1) from None
        result = run_matrix(settings, loaded, parse_releases(releases, settings.images_dir),
                            jobs=jobs or None, keep=keep)
        print(result.markdown, end="")
        print(f"\nmatrix: {result.path / 'matrix.md'}")
    if result.exit_code:
        raise Exit(code=result.exit_code)


@task(positional=["action", "scenario"], help={"action": "run", **MATRIX_FLAGS})
def matrix_dispatch(c: Context, action: str, scenario: str, releases: str | None = None,
                    jobs: int = 0, keep: bool = False, accel: str | None = None,
                    cpus: int | None = None, memory: int | None = None) -> None:
    """`invoke matrix run SCENARIO` as words, not a dotted name."""
    if action != "run":
        raise Exit(f"fentry-lab: error: unknown matrix action {action!r}: use run.", code=1)
    matrix_run(c, scenario, releases=releases, jobs=jobs, keep=keep, accel=accel, cpus=cpus,
               memory=memory)


# -- bench (issue 15: probe cost) --------------------------------------------------------


@task(help={"function": "Kernel function to probe (default __x64_sys_getpgid; "
                        "__set_task_comm uses a prctl(PR_SET_NAME) loop)",
            "samples": "Samples of about a second per mode (default 5)",
            "releases": "Compare kernels: comma-separated releases, one lab each (destroyed)",
            "name": LAB_FLAGS["name"], "release": LAB_FLAGS["release"],
            "accel": LAB_FLAGS["accel"]})
def bench_probes(c: Context, function: str = "__x64_sys_getpgid", samples: int = 5,
                 releases: str | None = None, name: str | None = None,
                 release: str | None = None, accel: str | None = None) -> None:
    """Measure what fentry, fexit, kprobe, kretprobe... add per call of one kernel function."""
    from lab.bench.probes import run_bench

    with friendly_errors():
        settings = settings_from(c, name=name, release=release, accel=accel)
        wanted = [r.strip() for r in (releases or "").split(",") if r.strip()]
        outcome = run_bench(settings, function=function, samples=samples, releases=wanted)
        print(outcome.text, end="")
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)



# -- collections -------------------------------------------------------------------------


def _collection(name: str, tasks: dict[str, object], default: str | None = None) -> Collection:
    collection = Collection(name)
    for task_name, body in tasks.items():
        collection.add_task(cast(Task[Any], body), task_name, default=task_name == default)
    return collection


image_ns = _collection("image", {"build": image_build, "list": image_list,
                                 "verify": image_verify, "box": image_box,
                                 "prune": image_prune})
lab_ns = _collection("lab", {"up": lab_up, "down": lab_down, "status": lab_status,
                             "ssh": lab_ssh, "logs": lab_logs, "destroy": lab_destroy})
scenario_ns = _collection("scenario", {"do": scenario_dispatch, "run": scenario_run,
                                       "list": scenario_list, "validate": scenario_validate,
                                       "show": scenario_show}, default="do")

matrix_ns = _collection("matrix", {"do": matrix_dispatch, "run": matrix_run}, default="do")

bench_ns = _collection("bench", {"probes": bench_probes})  # issue 15

ns = Collection(image_ns, lab_ns, scenario_ns, matrix_ns, bench_ns)
ns.configure({"lab": {}})
