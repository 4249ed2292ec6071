"""Image recipes: images/<release>.yaml -> Recipe, the list of known releases, the digest.

A recipe names a Debian suite and the packages of the guest. Recipes for the newest kernels
(``kernel:`` set) take the kernel from another suite (``kernel_suite``, e.g. trixie-backports)
and pick, at build time, the newest kernel that has a matching ``-dbg`` package, or the
version the user names (``--kernel`` / ``FENTRY_LAB_KERNEL``).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.config import Settings
from lab.errors import LabError, UsageError
from lab.image.keys import LabKeys

# The one list of releases the lab knows, oldest kernel first; the matrix runs all of them.
RELEASES = ("bullseye", "bookworm", "trixie", "trixie-backports", "sid")
DEFAULT_MATRIX_RELEASES = RELEASES

REQUIRED_KEYS = {"release", "suite", "mirror", "kernel_flavour", "root_device", "disk_interface",
                 "boot_initrd", "packages", "user"}
OPTIONAL_KEYS = {"kernel", "kernel_suite", "moving"}
KERNEL_SPEC = re.compile(r"newest|[0-9]+\.[0-9]+(\.[0-9]+)?(\+[a-z0-9.]+)?")


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
    kernel: str = ""  # "" = the suite's kernel meta-package; "newest" or a version: resolved
    kernel_suite: str = ""  # "" = suite
    moving: bool = False  # the suite changes under the same name (sid): pin what was used

    @property
    def kernel_source(self) -> str:
        return self.kernel_suite or self.suite


def known_releases(images_dir: Path | None = None) -> list[str]:
    """The releases the lab knows (images_dir is accepted for older callers and ignored)."""
    return list(RELEASES)


def load_recipe(settings: Settings, release: str | None = None) -> Recipe:
    release = release or settings.release
    path = settings.images_dir / f"{release}.yaml"
    if release not in RELEASES or not path.is_file():
        raise LabError(f"Unknown release {release!r}. Known releases: {', '.join(RELEASES)}.")
    data = yaml.safe_load(path.read_text())
    if (not isinstance(data, dict) or not set(data) >= REQUIRED_KEYS
            or not set(data) <= REQUIRED_KEYS | OPTIONAL_KEYS):
        raise LabError(f"Recipe {path} must be a mapping with the keys "
                       f"{', '.join(sorted(REQUIRED_KEYS))} (optional: "
                       f"{', '.join(sorted(OPTIONAL_KEYS))}).")
    kernel = str(data.get("kernel", ""))
    wanted = str(settings.kernel)
    if wanted:
        if not kernel:
            raise UsageError(f"The {release} recipe has a fixed kernel; --kernel / "
                             "FENTRY_LAB_KERNEL applies only to recipes with `kernel:` "
                             "(trixie-backports, sid).")
        kernel = wanted
    if kernel and not KERNEL_SPEC.fullmatch(kernel):
        raise UsageError(f"Kernel {kernel!r} is not a kernel version: use `newest` or a "
                         "version such as 7.2.12 or 7.2.12+deb13.")
    return Recipe(
        release=str(data["release"]), suite=str(data["suite"]),
        mirror=settings.mirror or str(data["mirror"]),
        kernel_flavour=str(data["kernel_flavour"]), root_device=str(data["root_device"]),
        disk_interface=str(data["disk_interface"]), boot_initrd=bool(data["boot_initrd"]),
        packages=tuple(sorted(str(p) for p in data["packages"])), user=str(data["user"]),
        path=path, kernel=kernel, kernel_suite=str(data.get("kernel_suite", "")),
        moving=bool(data.get("moving", False)),
    )


def recipe_digest(recipe: Recipe, keys: LabKeys) -> str:
    """Hash of everything that goes into the image except the mirror's contents."""
    h = hashlib.sha256()
    fields: list[object] = [recipe.release, recipe.suite, recipe.mirror, recipe.kernel_flavour,
                            recipe.root_device, recipe.packages, recipe.user]
    if recipe.kernel:  # only the newer recipes: older images keep their digest
        fields += [recipe.kernel, recipe.kernel_source, recipe.moving]
    h.update(json.dumps(fields).encode())
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


def image_name(recipe: Recipe, keys: LabKeys) -> str:
    """The cache directory name of a recipe's image (the one place it is computed)."""
    return f"{recipe.release}-{recipe_digest(recipe, keys)[:12]}"


def _version_key(kernel_release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", kernel_release.split("-")[0]))


def kernels_with_dbg(packages_index: str, flavour: str) -> list[str]:
    """Kernel releases (e.g. 7.3.4+deb13-cloud-amd64) with an image and a -dbg, oldest first."""
    names = set(re.findall(r"^Package: linux-image-(\S+)$", packages_index, re.MULTILINE))
    found = [n for n in names if n.endswith(f"-{flavour}") and f"{n}-dbg" in names
             and n[0].isdigit()]
    return sorted(found, key=_version_key)


def pick_kernel(available: list[str], spec: str, where: str) -> str:
    """The newest of the available kernel releases, or the one the spec names."""
    if not available:
        raise LabError(f"{where} has no kernel with a matching -dbg package, so no image with "
                       "debug symbols can be built from it.")
    if spec == "newest":
        return available[-1]
    matches = [k for k in available if k.split("-")[0] == spec or k.split("+")[0] == spec]
    if not matches:
        raise UsageError(f"Kernel {spec!r} is not in {where} with a -dbg package. "
                         f"Available: {', '.join(k.split('-')[0] for k in available)}.")
    return matches[-1]


def resolve_kernel(recipe: Recipe) -> str:
    """Ask the mirror's Packages index which kernel release the recipe builds."""
    url = (f"{recipe.mirror.rstrip('/')}/dists/{recipe.kernel_source}/main/binary-amd64/"
           "Packages.xz")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (http(s) only)
            index = lzma.decompress(response.read(256 * 1024**2)).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError, lzma.LZMAError) as exc:
        raise LabError(f"Could not read the package index {url} ({exc}) to pick the "
                       f"{recipe.release} kernel. Check the network or the mirror.") from None
    return pick_kernel(kernels_with_dbg(index, recipe.kernel_flavour), recipe.kernel,
                       f"{recipe.kernel_source} on {recipe.mirror}")


def include_packages(recipe: Recipe, kernel_release: str) -> list[str]:
    """The package list for mmdebstrap, the kernel meta-packages replaced by the picked one."""
    if not kernel_release:
        return list(recipe.packages)
    meta = {f"linux-image-{recipe.kernel_flavour}", f"linux-headers-{recipe.kernel_flavour}"}
    # pkg/suite makes apt take the pkg, and the newer dependencies it needs (linux-base),
    # from the kernel's suite; everything else stays on the base suite.
    suffix = f"/{recipe.kernel_suite}" if recipe.kernel_suite != recipe.suite and \
        recipe.kernel_suite else ""
    return [p for p in recipe.packages if p not in meta] + [
        f"linux-image-{kernel_release}{suffix}", f"linux-headers-{kernel_release}{suffix}"]


def apt_sources(recipe: Recipe) -> list[str]:
    """mmdebstrap's mirror arguments: the suite, plus the kernel's suite if it differs."""
    sources = [recipe.mirror]
    if recipe.kernel_suite and recipe.kernel_suite != recipe.suite:
        sources.append(f"deb {recipe.mirror} {recipe.kernel_suite} main")
    return sources
