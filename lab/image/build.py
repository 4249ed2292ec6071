"""Recipe -> cached image: mmdebstrap -> ext4 -> qcow2 -> manifest.

An image is a directory in the cache holding the root disk (qcow2), the kernel and initrd
for direct boot, the kernel's debug vmlinux and a manifest with hashes. It is built in a
temporary directory beside its final place and renamed into place only when complete,
under a lock, so an interrupted or concurrent build never leaves a half image.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from lab import console
from lab.config import Settings
from lab.elf import build_id_from_elf
from lab.errors import LabError
from lab.host import file_lock, require_tools, run_checked, tool_path
from lab.image.buildproc import (
    Watchdog,
    mark_builder,
    mounts_below,
    remove_build_dir,
    remove_stale_builds,
    run_in_group,
)
from lab.image.cache import (
    ARTEFACTS,
    Image,
    find_image,
    image_directory,
    list_images,
    make_image,
    read_image,
    sha256_file,
    verify_image,
    write_stamp,
)
from lab.image.keys import LabKeys, ensure_keys
from lab.image.recipe import (
    Recipe,
    apt_sources,
    include_packages,
    known_releases,
    load_recipe,
    recipe_digest,
    resolve_kernel,
)

__all__ = ["ARTEFACTS", "HOST_TOOLS", "Image", "Recipe", "build_image", "find_image",
           "image_directory", "known_releases", "list_images", "load_recipe", "mounts_below",
           "read_image", "recipe_digest", "remove_build_dir", "sha256_file", "verify_image"]

HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
    "dpkg-deb": "dpkg",
}
MIN_FREE_BYTES = 5 * 1024**3  # tree (~1.4 GB) + raw image + qcow2, with margin
_remove_stale_builds = remove_stale_builds  # older name, kept for tests


def _mirror_release(recipe: Recipe) -> tuple[int, bool]:
    """Fetch the suite's Release file: proves the mirror answers and dates the build.

    The Release file's Date becomes SOURCE_DATE_EPOCH, so the same mirror state gives the
    same timestamps inside the image.
    """
    url = f"{recipe.mirror.rstrip('/')}/dists/{recipe.suite}/Release"
    if not url.startswith(("http://", "https://")):
        raise LabError(f"The mirror {recipe.mirror!r} must be an http:// or https:// URL.")
    try:
        with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310 (checked above)
            text = response.read(64 * 1024).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LabError(
            f"The Debian mirror {recipe.mirror} did not answer for suite {recipe.suite!r} "
            f"({url}: {exc}). Check the network or set another mirror with "
            "FENTRY_LAB_MIRROR or `lab: mirror:` in invoke.yaml."
        ) from None
    match = re.search(r"^Date:\s*(.+)$", text, re.MULTILINE)
    if not match:
        raise LabError(f"{url} has no Date field: is {recipe.mirror} a Debian mirror?")
    date = int(email.utils.parsedate_to_datetime(match.group(1)).timestamp())
    # A mirror that is a snapshot (as here) serves suites past their Valid-Until (sid's is a
    # week): apt would refuse them. The signature is still checked; the manifest says so.
    until = re.search(r"^Valid-Until:\s*(.+)$", text, re.MULTILINE)
    expired = bool(until) and email.utils.parsedate_to_datetime(
        until.group(1) if until else "").timestamp() < time.time()
    return date, expired


def _check_disk_space(where: Path) -> None:
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        raise LabError(
            f"Only {free / 1024**3:.1f} GiB free in {where}; an image build needs "
            f"{MIN_FREE_BYTES / 1024**3:.0f} GiB. Free some space or point FENTRY_LAB_HOME "
            "at a larger disk."
        )


MISSING_PACKAGE = re.compile(r"Unable to locate package (\S+)|"
                             r"Package '?([^' ]+)'? has no installation candidate")


def missing_packages(line: str) -> list[str]:
    """Package names apt says it cannot find, from one line of its output."""
    return [a or b for a, b in MISSING_PACKAGE.findall(line)]


def _mmdebstrap(recipe: Recipe, keys: LabKeys, tree: Path, out: Path, epoch: int,
                kernel_release: str = "", *, expired: bool = False) -> None:
    mode = "root" if os.geteuid() == 0 else "unshare"
    if mode == "unshare" and not Path("/proc/sys/kernel/unprivileged_userns_clone").exists():
        console.warn("not root: trying mmdebstrap's unshare mode (needs user namespaces)")
    argv = [
        "mmdebstrap", f"--mode={mode}", "--variant=minbase", "--format=directory",
        "--aptopt=Acquire::Retries 3",
        *(["--aptopt=Acquire::Check-Valid-Until false"] if expired else []),
        f"--include={','.join(include_packages(recipe, kernel_release))}",
        f"--customize-hook={recipe.path.parent / 'customize.sh'} \"$1\"",
        recipe.suite, str(tree), *apt_sources(recipe),
    ]
    env = {
        "SOURCE_DATE_EPOCH": str(epoch),
        "LAB_IMAGES": str(recipe.path.parent),
        "LAB_KEYS": str(keys.directory),
        "LAB_USER": recipe.user,
        "LAB_OUT": str(out),
    }
    missing: list[str] = []

    def show(line: str) -> None:
        missing.extend(missing_packages(line))
        if line.startswith(("I: ", "fentry-lab: ", "E: ", "W: ")):
            console.say(f"  {line}")

    try:
        run_in_group(argv, build=out, what="mmdebstrap", on_line=show, env=env)
    except LabError as exc:
        if missing:
            raise LabError(
                f"The mirror {recipe.mirror} has no package {', '.join(missing)} in suite "
                f"{recipe.suite!r}. Fix the package list in {recipe.path}."
            ) from None
        raise LabError(f"Building the {recipe.release} tree failed. {exc}") from None


def _make_disk(tree: Path, out: Path, recipe: Recipe, digest: str, epoch: int) -> None:
    # Clamp timestamps and fix the filesystem's UUID and hash seed so that the same inputs
    # give the same bytes.
    run_checked(["find", str(tree), "-newermt", f"@{epoch}", "-exec", "touch", "-h", "-d",
                 f"@{epoch}", "{}", "+"], what="clamping timestamps")
    used = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not f.is_symlink())
    size_mib = ((used * 12 // 10) // 1024**2 + 1024 + 63) // 64 * 64
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fentry-lab:{digest}"))
    raw = out / "disk.raw"
    console.say(f"making the ext4 root filesystem ({size_mib} MiB, {used / 1024**2:.0f} MiB used)")
    run_checked(
        [tool_path("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "fentry-lab", "-U", fs_uuid,
         "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(tree), str(raw),
         f"{size_mib}M"],
        what="mke2fs", env={"E2FSPROGS_FAKE_TIME": str(epoch)},
    )
    _clamp_inode_times(tree, raw, epoch)
    console.say("converting to qcow2")
    run_checked(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                 str(out / "disk.qcow2")], what="qemu-img convert")
    raw.unlink()


def _clamp_inode_times(tree: Path, raw: Path, epoch: int) -> None:
    """Set every inode's ctime and atime to the epoch, nanoseconds to 0.

    mke2fs -d (1.47.0) copies them from the build tree, where they are the time of the build
    (ctime cannot be set from userspace; atime moves as files are read). debugfs does 40 000
    inodes in about a second.
    """
    def fields(path: str) -> list[str]:
        return [f'sif {path} ctime @{epoch}', f'sif {path} atime @{epoch}',
                f'sif {path} ctime_extra 0', f'sif {path} atime_extra 0',
                f'sif {path} mtime_extra 0']

    commands = fields("/")
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(dirs + files):
            path = "/" + os.path.relpath(os.path.join(root, name), tree)
            if '"' not in path and "\n" not in path:
                commands += fields(f'"{path}"')
    script = raw.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n")
    run_checked([tool_path("debugfs"), "-w", "-f", str(script), str(raw)],
                what="debugfs (clamping ctimes)", env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    script.unlink()


def _versions() -> dict[str, str]:
    found = {}
    for tool, argv in {"mmdebstrap": ["mmdebstrap", "--version"],
                       "qemu-img": ["qemu-img", "--version"]}.items():
        with contextlib.suppress(LabError, OSError):
            found[tool] = run_checked(argv, what=tool).splitlines()[0].strip()
    return found


def build_image(settings: Settings, release: str | None = None, *, force: bool = False) -> Image:
    """Build the image for a release, or return the cached one (a no-op when cached)."""
    recipe = load_recipe(settings, release)
    keys = ensure_keys(settings.keys_dir)
    digest = recipe_digest(recipe, keys)
    final = image_directory(settings, recipe)
    existing = read_image(final)
    if existing and not force:
        console.say(f"image {final.name} is already built ({final})")
        return existing
    require_tools(HOST_TOOLS)
    settings.images_cache.mkdir(parents=True, exist_ok=True)
    with file_lock(settings.images_cache / f".lock-{recipe.release}", wait=True,
                   busy=f"another build of the {recipe.release} image is running; waiting for it"):
        existing = read_image(final)
        if existing and not force:  # built by a concurrent builder while we waited
            return existing
        remove_stale_builds(settings.images_cache)
        _check_disk_space(settings.images_cache)
        epoch, expired = _mirror_release(recipe)
        if expired:
            console.warn(f"the mirror's {recipe.suite} Release is past its Valid-Until (a "
                         "snapshot mirror): building from it anyway, as the manifest records")
        kernel_release = resolve_kernel(recipe) if recipe.kernel else ""
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{recipe.release}-",
                                    dir=settings.images_cache))
        mark_builder(tmp)
        watchdog = Watchdog(tmp)
        try:
            os.chmod(tmp, 0o755)  # noqa: S103 (apt drops privileges to _apt to download)
            tree = tmp / "tree"
            picked = f", kernel {kernel_release} from {recipe.kernel_source}" \
                if kernel_release else ""
            console.say(f"[1/3] installing Debian {recipe.suite} from {recipe.mirror}{picked} "
                        "(mmdebstrap, a few minutes)")
            _mmdebstrap(recipe, keys, tree, tmp, epoch, kernel_release, expired=expired)
            console.say("[2/3] building the disk image")
            _make_disk(tree, tmp, recipe, digest, epoch)
            remove_build_dir(tree)
            console.say("[3/3] hashing artefacts and writing the manifest")
            image = _write_manifest(tmp, recipe, digest, epoch, started, kernel_release,
                                    expired)
            (tmp / "builder.pid").unlink()
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            write_stamp(make_image(final, image.manifest))  # hashed just now, in the manifest
        except BaseException:
            remove_build_dir(tmp)
            raise
        finally:
            watchdog.done()
    console.say(f"image ready: {final} (kernel {image.kernel_release}, "
                f"{time.monotonic() - started:.0f} s)")
    return make_image(final, image.manifest)


def _write_manifest(out: Path, recipe: Recipe, digest: str, epoch: int,
                    started: float, picked_kernel: str = "", expired: bool = False) -> Image:
    kernel_release = (out / "kernel-release.txt").read_text().strip()
    build_id = build_id_from_elf(out / "vmlinux")
    if not build_id:
        raise LabError(f"The debug vmlinux of {kernel_release} has no GNU build ID.")
    packages = dict(line.split("\t", 1) for line in
                    (out / "packages.tsv").read_text().splitlines() if "\t" in line)
    manifest: dict[str, Any] = {
        "release": recipe.release,
        "suite": recipe.suite,
        "mirror": recipe.mirror,
        "recipe_digest": digest,
        "kernel_release": kernel_release,
        "build_id": build_id,
        "dbg_package": (out / "dbg-deb.txt").read_text().strip(),
        "user": recipe.user,
        "boot": {"root_device": recipe.root_device, "disk_interface": recipe.disk_interface,
                 "initrd": "yes" if recipe.boot_initrd else "no"},
        "source_date_epoch": epoch,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "builder": _versions(),
        "packages": dict(sorted(packages.items())),
        **({"kernel": {"asked": recipe.kernel, "picked": picked_kernel,
                       "suite": recipe.kernel_source,
                       "package": f"linux-image-{picked_kernel}="
                                  + packages.get(f"linux-image-{picked_kernel}", "")}}
           if picked_kernel else {}),
        **({"release_expired": True} if expired else {}),
        **({"moving": True, "note": f"{recipe.suite} moves: this image pins the versions in "
                                    "`packages` and the mirror state of source_date_epoch"}
           if recipe.moving else {}),
        "artefacts": {name: {"sha256": sha256_file(out / name),
                             "size": (out / name).stat().st_size} for name in ARTEFACTS},
    }
    for scratch in ("kernel-release.txt", "packages.tsv", "dbg-deb.txt"):
        (out / scratch).unlink()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return make_image(out, manifest)
