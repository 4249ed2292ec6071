"""image.* tasks: build, list, verify, prune, box."""

from __future__ import annotations

from invoke.context import Context

from lab.cli.common import LAB_FLAGS, emit, friendly_errors, lab_task, settings_from
from lab.errors import LabError


@lab_task(help={"release": LAB_FLAGS["release"],
                "force": "Rebuild even when the cached image is current",
                "mirror": "Debian mirror URL (default: the recipe's)",
                "kernel": "Kernel version for trixie-backports/sid (default: the newest with "
                          "a -dbg package)"})
def build(c: Context, release: str | None = None, force: bool = False,
          mirror: str | None = None, kernel: str | None = None) -> None:
    """Build (or reuse) the lab image for a release."""
    from lab.image.build import build_image

    with friendly_errors():
        image = build_image(settings_from(c, release=release, mirror=mirror, kernel=kernel),
                            force=force)
        emit(str(image.directory))


@lab_task(help={"json": "Print JSON (one object per image) instead of a table"})
def list_(c: Context, json: bool = False) -> None:
    """List the cached images."""
    from lab import views
    from lab.image.build import list_images

    with friendly_errors():
        images = list_images(settings_from(c))
        emit(views.images_json(images) if json else views.images_table(images))


@lab_task()
def prune(c: Context) -> None:
    """Delete cached images that no current recipe builds and no lab uses, the static
    disassembly records of kernels no cached image has, and probe builds unused for 30 days."""
    from lab.image.cache import list_images, prune
    from lab.run.guest import prune_static
    from lab.run.probes import prune_builds
    from lab.vm.base import LabState

    with friendly_errors():
        settings = settings_from(c)
        states = [LabState.load(p, p.parent.name, "")
                  for p in settings.labs_dir.glob("*/state.json")]
        removed = prune(settings, keep={s.image for s in states if s.image})
        removed += prune_static(settings.home,
                                {image.build_id for image in list_images(settings)})
        removed += prune_builds(settings.home)
        for path in removed:
            emit(f"removed {path}")
        if not removed:
            emit("nothing to prune")


@lab_task(help={"release": LAB_FLAGS["release"]})
def verify(c: Context, release: str | None = None) -> None:
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
        emit(f"image {image.directory.name}: all artefacts match the manifest")


@lab_task(help={"release": LAB_FLAGS["release"],
                "force": "Make and add the box again even when Vagrant already has it",
                "remove": "Remove the release's fentry-lab boxes and their libvirt volumes"})
def box(c: Context, release: str | None = None, force: bool = False,
        remove: bool = False) -> None:
    """Turn the cached image into a Vagrant box (libvirt) and add it; then `vagrant up` works."""
    from lab.vm.vagrant.box import make_box, remove_boxes

    with friendly_errors():
        settings = settings_from(c, release=release)
        if remove:
            for found in remove_boxes(settings):
                emit(f"removed {found.name}")
            return
        emit(make_box(settings, force=force).name)


TASKS = {"build": build, "list": list_, "verify": verify, "box": box, "prune": prune}
