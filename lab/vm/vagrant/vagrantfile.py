"""What the Vagrantfile needs from the lab: its config, the prepare and cleanup hooks
around `vagrant up`/`destroy`, and their `python -m lab.vm.vagrant.vagrantfile` entry point."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from lab import console
from lab.config import REPO_ROOT, Settings, load_settings
from lab.errors import LabError
from lab.image.build import Image, find_image
from lab.image.keys import ensure_keys
from lab.vm.accel import Accel, choose_accel
from lab.vm.base import lab_dir
from lab.vm.base import lab_names as names_in
from lab.vm.boot import boot_timeout as base_boot_timeout
from lab.vm.boot import kernel_cmdline as base_cmdline
from lab.vm.vagrant.box import (
    Box,
    box_name,
    ensure_boot_volumes,
    list_boxes,
    remove_volumes,
    stale_boxes,
)
from lab.vm.vagrant.libvirt import (
    DEFAULT_POOL_PATH,
    DOMAIN_PREFIX,
    LIBVIRTD_SOCKET,
    NETWORK,
    NETWORK_ADDRESS,
    check_tools,
    ensure_daemons,
    ensure_kvm_device_access,
    ensure_network,
    pool_path,
    remove_network,
    socket_answers,
)

# Root on the virtio disk libvirt gives: the cloud kernel needs its initrd for virtio_blk.
ROOT_DEVICE = "/dev/vda"
DHCP_PACKAGE = "udhcpc"


# -- what the Vagrantfile needs ----------------------------------------------------------


def domain_name(name: str) -> str:
    return f"{DOMAIN_PREFIX}{name}"


def lab_directory(settings: Settings) -> Path:
    return lab_dir(settings.home / "vagrant" / "labs", settings.name)


def lab_names(settings: Settings) -> list[str]:
    """Labs the Vagrant backend has state for (for `lab.status --backend vagrant`)."""
    return names_in(settings.home / "vagrant" / "labs")


def kernel_cmdline(extra: str = "") -> str:
    # No panic=: a panicking guest halts (libvirt would restart a rebooting one in a loop);
    # the backend sees the panic on the serial log. fentry_lab.net=dhcp: see fentry-lab-net.
    return base_cmdline(ROOT_DEVICE, f"net.ifnames=0 fentry_lab.net=dhcp {extra}".strip(),
                        panic_exits=False)


def libvirt_driver(accel: Accel) -> str:
    return "kvm" if accel.name == "kvm" else "qemu"


def boot_timeout(settings: Settings, accel: Accel) -> float:
    # Vagrant's own wait also covers the DHCP lease and its SSH handshake.
    return base_boot_timeout(settings, accel)


def vagrantfile_config(settings: Settings) -> dict[str, object]:
    """Everything the Vagrantfile reads, from the lab's settings. Never raises for a missing
    image or box (`vagrant status` and `vagrant destroy` must still work): `problem` says
    what `vagrant up` would stop on."""
    problem = ""
    try:
        accel = choose_accel(settings.accel)
    except LabError as exc:
        problem, accel = str(exc), Accel("tcg", "unusable KVM was asked for")
    keys = ensure_keys(settings.keys_dir)
    box, image_dir = "", ""
    try:
        image = find_image(settings)
    except LabError as exc:
        image, problem = None, problem or str(exc)
    if image is None:
        problem = problem or (f"No {settings.release} image is built yet: run "
                              "`invoke image.box` (it builds the image first).")
    else:
        box, image_dir = box_name(image), str(image.directory)
    pool = (pool_path() if socket_answers(LIBVIRTD_SOCKET) else None) or DEFAULT_POOL_PATH
    boxed = Box(box) if box else None
    return {
        "name": settings.name,
        "domain_prefix": DOMAIN_PREFIX,
        "domain": domain_name(settings.name),
        "release": settings.release,
        "image": image_dir,
        "box": box,
        "box_added": bool(boxed and boxed.added),
        "kernel": str(pool / boxed.kernel_volume) if boxed else "",
        "initrd": str(pool / boxed.initrd_volume) if boxed else "",
        "cmd_line": kernel_cmdline(settings.kernel_args),
        "cpus": settings.cpus,
        "memory": settings.memory,
        "accel": accel.name,
        "accel_reason": accel.reason,
        "driver": libvirt_driver(accel),
        # TCG: every feature QEMU can emulate (as -cpu max); KVM: the host's CPU (-cpu host).
        "cpu_mode": "host-passthrough" if accel.name == "kvm" else "maximum",
        "boot_timeout": int(boot_timeout(settings, accel)),
        "serial_log": str(lab_directory(settings) / "serial.log"),
        "private_key": str(keys.client_private),
        "network": NETWORK,
        "network_address": NETWORK_ADDRESS,
        "problem": problem,
    }


def require_dhcp_client(image: Image) -> None:
    packages = image.manifest.get("packages")
    if not isinstance(packages, dict) or DHCP_PACKAGE not in packages:
        raise LabError(f"The {image.release} image has no DHCP client ({DHCP_PACKAGE}), which "
                       "the Vagrant backend needs on libvirt's network: add it to "
                       f"images/{image.release}.yaml and run `invoke image.box`, or use "
                       "--backend qemu.")


def prepare_for_up(settings: Settings, expected_kernel: str | None = None) -> Box:
    """Before `vagrant up` (the Vagrantfile's trigger, and the backend): host checks, the
    daemons, the current box, its kernel and initrd in libvirt's pool, the log directory."""
    check_tools()
    ensure_kvm_device_access()
    ensure_daemons()
    image = find_image(settings)
    if image is None:
        raise LabError(f"No {settings.release} image is built yet: run `invoke image.box` "
                       "(it builds the image, then the box).")
    require_dhcp_client(image)
    box = Box(box_name(image))
    if not box.added:
        older = ", ".join(b.name for b in stale_boxes(image))
        hint = f" Vagrant only has boxes of older {image.release} images: {older}." \
            if older else ""
        raise LabError(f"The box for the current {image.release} image ({box.name}) is not "
                       f"added.{hint} Run `invoke image.box --release {image.release}`.")
    kernel, _ = ensure_boot_volumes(box, image)
    ensure_network()
    expected = expected_kernel or os.environ.get("FENTRY_LAB_VAGRANT_KERNEL")
    if expected and Path(expected) != kernel:
        raise LabError(f"libvirt's pool keeps the kernel at {kernel}, not at {expected} where "
                       "the Vagrantfile looked before libvirtd was started: run the same "
                       "command again.")
    lab_directory(settings).mkdir(parents=True, exist_ok=True)
    return box


def cleanup_after_destroy(settings: Settings) -> None:
    """After `vagrant destroy`: the box volumes, kernels and network no domain uses any
    more, and the lab's own files. The box itself stays added (`invoke image.box` made it)."""
    if socket_answers(LIBVIRTD_SOCKET):
        for box in list_boxes():
            kept = remove_volumes(box)
            if kept:
                console.say(f"kept volumes still used by other labs: {', '.join(kept)}")
        remove_network(NETWORK)
    directory = lab_directory(settings)
    if directory.exists():
        shutil.rmtree(directory)
    # Vagrant keeps an empty folder per destroyed machine in the checkout's .vagrant.
    machine = REPO_ROOT / ".vagrant" / "machines" / settings.name
    if machine.is_dir() and not any(p.is_file() for p in machine.rglob("*")):
        shutil.rmtree(machine)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The resolved settings as FENTRY_LAB_* variables: the Vagrantfile's helper reads them
    over invoke.yaml, so task flags reach `vagrant` too."""
    env = {}
    for f in dataclasses.fields(settings):
        env[f"FENTRY_LAB_{f.name.upper()}"] = str(getattr(settings, f.name))
    return env



# -- the entry point ---------------------------------------------------------------------


def settings_for_vagrantfile(project: Path | None = None) -> Settings:
    """Settings exactly as the tasks load them: invoke's config (system, user and the
    project's invoke.yaml `lab:` section), then FENTRY_LAB_* variables (which the backend
    sets from task flags)."""
    from invoke.config import Config

    config = Config(project_location=project or REPO_ROOT)
    config.load_project()
    config.load_shell_env()
    section = config.get("lab") or {}
    return load_settings(dict(section))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in ("config", "prepare", "cleanup"):
        print("usage: python -m lab.vm.vagrant.vagrantfile config|prepare|cleanup", file=sys.stderr)
        return 64
    try:
        settings = settings_for_vagrantfile()
        if args[0] == "config":
            print(json.dumps(vagrantfile_config(settings), indent=2))
        elif args[0] == "prepare":
            prepare_for_up(settings)
        else:
            cleanup_after_destroy(settings)
    except LabError as exc:
        print(f"fentry-lab: error: {exc}", file=sys.stderr)
        return exc.code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
