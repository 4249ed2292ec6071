"""Recipe -> cached, verified lab image.

An image is a directory in the cache holding the root disk (qcow2), the kernel and initrd
for direct boot, the kernel's debug vmlinux and a manifest with hashes. It is built in a
temporary directory beside its final place and renamed into place only when complete,
under a lock, so an interrupted or concurrent build never leaves a half image.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import console
from lab.config import Settings
from lab.elf import build_id_from_elf
from lab.errors import LabError
from lab.host import file_lock, require_tools, run_checked, run_streamed, tool_path
from lab.image.keys import LabKeys, ensure_keys

HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
    "dpkg-deb": "dpkg",
}
MIN_FREE_BYTES = 5 * 1024**3  # tree (~1.4 GB) + raw image + qcow2, with margin
ARTEFACTS = ("disk.qcow2", "vmlinuz", "initrd.img", "vmlinux")
RECIPE_KEYS = {"release", "suite", "mirror", "kernel_flavour", "root_device", "disk_interface",
               "boot_initrd", "packages", "user"}


@dataclass(frozen=True)
class Recipe:
    release: str
    suite: str
    mirror: str
    kernel_flavour: str
    root_device: str
    disk_interface: str
    boot_initrd: bool
    packages: tuple[str, ...]
    user: str
    path: Path


def known_releases(images_dir: Path) -> list[str]:
    return sorted(p.stem for p in images_dir.glob("*.yaml"))


def load_recipe(settings: Settings, release: str | None = None) -> Recipe:
    release = release or settings.release
    path = settings.images_dir / f"{release}.yaml"
    if not re.fullmatch(r"[a-z][a-z0-9-]*", release) or not path.is_file():
        known = ", ".join(known_releases(settings.images_dir))
        raise LabError(f"Unknown release {release!r}. Known releases: {known}.")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or set(data) != RECIPE_KEYS:
        raise LabError(f"Recipe {path} must be a mapping with exactly the keys "
                       f"{', '.join(sorted(RECIPE_KEYS))}.")
    return Recipe(
        release=str(data["release"]), suite=str(data["suite"]),
        mirror=settings.mirror or str(data["mirror"]),
        kernel_flavour=str(data["kernel_flavour"]), root_device=str(data["root_device"]),
        disk_interface=str(data["disk_interface"]), boot_initrd=bool(data["boot_initrd"]),
        packages=tuple(sorted(str(p) for p in data["packages"])), user=str(data["user"]),
        path=path,
    )


def recipe_digest(recipe: Recipe, keys: LabKeys) -> str:
    """Hash of everything that goes into the image except the mirror's contents."""
    h = hashlib.sha256()
    h.update(json.dumps([recipe.release, recipe.suite, recipe.mirror, recipe.kernel_flavour,
                         recipe.root_device, recipe.packages, recipe.user]).encode())
    images_dir = recipe.path.parent
    inputs = [images_dir / "customize.sh", images_dir / "masked-units.txt"]
    inputs += sorted(p for p in (images_dir / "overlay").rglob("*") if p.is_file())
    for path in inputs:
        h.update(str(path.relative_to(images_dir)).encode())
        h.update(oct(path.stat().st_mode & 0o777).encode())
        h.update(path.read_bytes())
    h.update(keys.host_public.read_bytes())
    h.update(keys.client_public.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Image:
    directory: Path
    manifest: dict[str, object]

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def vmlinux(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def kernel_release(self) -> str:
        return str(self.manifest["kernel_release"])

    @property
    def build_id(self) -> str:
        return str(self.manifest["build_id"])

    @property
    def release(self) -> str:
        return str(self.manifest["release"])

    @property
    def boot(self) -> dict[str, str]:
        boot = self.manifest["boot"]
        assert isinstance(boot, dict)
        return {str(k): str(v) for k, v in boot.items()}


def read_image(directory: Path) -> Image | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    return Image(directory, json.loads(manifest_path.read_text()))


def image_directory(settings: Settings, recipe: Recipe, keys: LabKeys) -> Path:
    return settings.images_cache / f"{recipe.release}-{recipe_digest(recipe, keys)[:12]}"


def find_image(settings: Settings, release: str | None = None) -> Image | None:
    """The cached image for the current recipe of a release, if built."""
    recipe = load_recipe(settings, release)
    keys = ensure_keys(settings.keys_dir)
    return read_image(image_directory(settings, recipe, keys))


def list_images(settings: Settings) -> list[Image]:
    if not settings.images_cache.is_dir():
        return []
    found = (read_image(d) for d in sorted(settings.images_cache.iterdir()) if d.is_dir())
    return [img for img in found if img is not None]


def prune_images(settings: Settings) -> list[Path]:
    """Delete cached images that no current recipe builds and no lab's disk is based on."""
    keys = ensure_keys(settings.keys_dir)
    keep = {image_directory(settings, load_recipe(settings, release), keys)
            for release in known_releases(settings.images_dir)}
    if settings.labs_dir.is_dir():
        for state in settings.labs_dir.glob("*/state.json"):
            used = json.loads(state.read_text()).get("image")
            if used:
                keep.add(Path(used))
    removed = []
    for image in list_images(settings):
        if image.directory not in keep:
            shutil.rmtree(image.directory)
            removed.append(image.directory)
    return removed


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def verify_image(image: Image) -> list[str]:
    """Recompute every artefact's sha256; return one line per mismatch (empty: intact)."""
    problems = []
    artefacts = image.manifest.get("artefacts")
    assert isinstance(artefacts, dict)
    for name, expected in sorted(artefacts.items()):
        path = image.directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            problems.append(f"{name}: sha256 {actual} differs from the manifest's "
                            f"{expected['sha256']}")
    return problems


def _mirror_release_date(recipe: Recipe) -> int:
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
    return int(email.utils.parsedate_to_datetime(match.group(1)).timestamp())


def _check_disk_space(where: Path) -> None:
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        raise LabError(
            f"Only {free / 1024**3:.1f} GiB free in {where}; an image build needs "
            f"{MIN_FREE_BYTES / 1024**3:.0f} GiB. Free some space or point FENTRY_LAB_HOME "
            "at a larger disk."
        )


def mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def remove_build_dir(path: Path) -> None:
    """Delete a (partial) build, never through a mount point mmdebstrap may have left.

    A tree with /proc, /sys or /dev still mounted would otherwise have rmtree walk into the
    host's own files.
    """
    for point in mounts_below(path):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = mounts_below(path)
    if left:
        raise LabError(f"The unfinished build in {path} still has mounts ({', '.join(left)}); "
                       "it was not deleted. Unmount them (`umount -R`) and delete it by hand.")
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale_builds(cache: Path) -> None:
    """Temporary build directories whose builder is gone (killed, power loss)."""
    for tmp in cache.glob(".build-*"):
        pid_file = tmp / "builder.pid"
        try:
            os.kill(int(pid_file.read_text()), 0)
            continue  # still building
        except (OSError, ValueError):
            pass
        remove_build_dir(tmp)


MISSING_PACKAGE = re.compile(r"Unable to locate package (\S+)|"
                             r"Package '?([^' ]+)'? has no installation candidate")


def missing_packages(line: str) -> list[str]:
    """Package names apt says it cannot find, from one line of its output."""
    return [a or b for a, b in MISSING_PACKAGE.findall(line)]


def _mmdebstrap(recipe: Recipe, keys: LabKeys, tree: Path, out: Path, epoch: int) -> None:
    mode = "root" if os.geteuid() == 0 else "unshare"
    if mode == "unshare" and not Path("/proc/sys/kernel/unprivileged_userns_clone").exists():
        console.warn("not root: trying mmdebstrap's unshare mode (needs user namespaces)")
    argv = [
        "mmdebstrap", f"--mode={mode}", "--variant=minbase", "--format=directory",
        "--aptopt=Acquire::Retries 3",
        f"--include={','.join(recipe.packages)}",
        f"--customize-hook={recipe.path.parent / 'customize.sh'} \"$1\"",
        recipe.suite, str(tree), recipe.mirror,
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
        if line.startswith(("I: ", "fentry-lab: ", "Get:", "E: ", "W: ")) and not line.startswith(
                "Get:"):
            console.say(f"  {line}")

    try:
        run_streamed(argv, what="mmdebstrap", on_line=show, env=env)
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
    final = settings.images_cache / f"{recipe.release}-{digest[:12]}"
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
        _remove_stale_builds(settings.images_cache)
        _check_disk_space(settings.images_cache)
        epoch = _mirror_release_date(recipe)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{recipe.release}-",
                                    dir=settings.images_cache))
        try:
            os.chmod(tmp, 0o755)  # noqa: S103 (apt drops privileges to _apt to download)
            (tmp / "builder.pid").write_text(str(os.getpid()))
            tree = tmp / "tree"
            console.say(f"[1/3] installing Debian {recipe.suite} from {recipe.mirror} "
                        "(mmdebstrap, about a minute)")
            _mmdebstrap(recipe, keys, tree, tmp, epoch)
            console.say("[2/3] building the disk image")
            _make_disk(tree, tmp, recipe, digest, epoch)
            remove_build_dir(tree)
            console.say("[3/3] hashing artefacts and writing the manifest")
            image = _write_manifest(tmp, recipe, digest, epoch, started)
            (tmp / "builder.pid").unlink()
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            remove_build_dir(tmp)
            raise
    console.say(f"image ready: {final} (kernel {image.kernel_release}, "
                f"{time.monotonic() - started:.0f} s)")
    return Image(final, image.manifest)


def _write_manifest(out: Path, recipe: Recipe, digest: str, epoch: int,
                    started: float) -> Image:
    kernel_release = (out / "kernel-release.txt").read_text().strip()
    build_id = build_id_from_elf(out / "vmlinux")
    if not build_id:
        raise LabError(f"The debug vmlinux of {kernel_release} has no GNU build ID.")
    packages = dict(line.split("\t", 1) for line in
                    (out / "packages.tsv").read_text().splitlines() if "\t" in line)
    manifest: dict[str, object] = {
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
        "artefacts": {name: {"sha256": sha256_file(out / name),
                             "size": (out / name).stat().st_size} for name in ARTEFACTS},
    }
    for scratch in ("kernel-release.txt", "packages.tsv", "dbg-deb.txt"):
        (out / scratch).unlink()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Image(out, manifest)
