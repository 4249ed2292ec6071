"""The image cache: find, list, verify and prune built images by their typed manifest.

``find_image`` (what ``lab.up`` uses) refuses an image whose artefacts no longer match the
manifest. It hashes them once and keeps a stamp (size, mtime_ns, inode, ctime_ns per file) so
that later calls only stat: a file rewritten in place changes its mtime/ctime, a replaced file
its inode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import Settings
from lab.errors import LabError
from lab.image.keys import ensure_keys
from lab.image.recipe import RELEASES, Recipe, image_name, load_recipe

ARTEFACTS = ("disk.qcow2", "vmlinuz", "initrd.img", "vmlinux")
STAMP = ".verified.json"


@dataclass(frozen=True)
class Manifest:
    """manifest.json of a built image; ``raw`` keeps every field for older readers."""

    release: str
    kernel_release: str
    build_id: str
    recipe_digest: str
    artefacts: dict[str, dict[str, Any]]
    packages: dict[str, str]
    boot: dict[str, str]
    built_at: str = ""
    moving: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        boot = data.get("boot") or {}
        return cls(
            release=str(data.get("release", "")),
            kernel_release=str(data.get("kernel_release", "")),
            build_id=str(data.get("build_id", "")),
            recipe_digest=str(data.get("recipe_digest", "")),
            artefacts=dict(data.get("artefacts") or {}),
            packages={str(k): str(v) for k, v in (data.get("packages") or {}).items()},
            boot={str(k): str(v) for k, v in boot.items()},
            built_at=str(data.get("built_at", "")),
            moving=bool(data.get("moving", False)),
            raw=dict(data),
        )

    # Mapping-style access, so code written against the old dict manifest keeps working.
    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


@dataclass(frozen=True, init=False)
class Image:
    directory: Path
    manifest: Manifest

    def __init__(self, directory: Path, manifest: Manifest | Mapping[str, Any]) -> None:
        if not isinstance(manifest, Manifest):  # the raw manifest.json mapping
            manifest = Manifest.from_dict(dict(manifest))
        object.__setattr__(self, "directory", directory)
        object.__setattr__(self, "manifest", manifest)

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
        return self.manifest.kernel_release

    @property
    def build_id(self) -> str:
        return self.manifest.build_id

    @property
    def release(self) -> str:
        return self.manifest.release

    @property
    def boot(self) -> dict[str, str]:
        return dict(self.manifest.boot)


def make_image(directory: Path, manifest: Mapping[str, Any] | Manifest) -> Image:
    return Image(directory, manifest)


def read_image(directory: Path) -> Image | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    return make_image(directory, data) if isinstance(data, dict) else None


def image_directory(settings: Settings, recipe: Recipe) -> Path:
    return settings.images_cache / image_name(recipe, ensure_keys(settings.keys_dir))


def find_image(settings: Settings, release: str | None = None, *,
               verify: bool = True) -> Image | None:
    """The cached image for the current recipe of a release, if built and intact."""
    image = read_image(image_directory(settings, load_recipe(settings, release)))
    if image is not None and verify:
        problems = check_intact(image)
        if problems:
            raise LabError(
                f"The cached image {image.directory} no longer matches its manifest ("
                + "; ".join(problems) + "). It was modified after it was built and will not "
                "be booted. Rebuild it with `invoke image.build --force`.")
    return image


def list_images(settings: Settings) -> list[Image]:
    if not settings.images_cache.is_dir():
        return []
    found = (read_image(d) for d in sorted(settings.images_cache.iterdir()) if d.is_dir())
    return [img for img in found if img is not None]


def current_images(settings: Settings) -> set[Path]:
    """The directories the current recipes of all known releases build."""
    return {image_directory(settings, load_recipe(settings, r)) for r in RELEASES
            if (settings.images_dir / f"{r}.yaml").is_file()}


def prune(settings: Settings, *, keep: Collection[Path | str]) -> list[Path]:
    """Delete cached images that no current recipe builds and that are not in ``keep``.

    ``keep`` is the set of image directories in use (by labs); the caller collects it.
    """
    kept = current_images(settings) | {Path(p) for p in keep}
    removed = []
    for image in list_images(settings):
        if image.directory not in kept:
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
    return list(_mismatches(image))


def _mismatches(image: Image) -> Iterator[str]:
    for name, expected in sorted(image.manifest.artefacts.items()):
        path = image.directory / name
        if not path.is_file():
            yield f"{name}: missing"
            continue
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            yield f"{name}: sha256 {actual} differs from the manifest's {expected['sha256']}"


def _stamp(image: Image) -> dict[str, list[int]]:
    stamp = {}
    for name in sorted(image.manifest.artefacts):
        try:
            st = (image.directory / name).stat()
        except OSError:
            continue
        stamp[name] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    return stamp


def check_intact(image: Image) -> list[str]:
    """Like verify_image, but hashes only when a file changed since the last good check."""
    stamp_path = image.directory / STAMP
    now = _stamp(image)
    try:
        if json.loads(stamp_path.read_text()) == now and len(now) == len(image.manifest.artefacts):
            return []
    except (OSError, ValueError):
        pass
    problems = verify_image(image)
    if not problems:
        write_stamp(image, now)
    return problems


def write_stamp(image: Image, stamp: dict[str, list[int]] | None = None) -> None:
    """Record the artefacts as verified (the builder calls it: it has just hashed them)."""
    path = image.directory / STAMP
    tmp = path.with_name(f"{STAMP}.{os.getpid()}")
    with contextlib.suppress(OSError):  # a read-only cache: hash again next time
        tmp.write_text(json.dumps(stamp if stamp is not None else _stamp(image)))
        os.replace(tmp, path)
