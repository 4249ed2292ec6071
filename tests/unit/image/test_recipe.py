"""Recipes of the newest kernels: picking the kernel from a Packages index, the package list."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.config import Settings, load_settings
from lab.errors import LabError, UsageError
from lab.image.keys import ensure_keys
from lab.image.recipe import (
    DEFAULT_MATRIX_RELEASES,
    RELEASES,
    apt_sources,
    include_packages,
    kernels_with_dbg,
    load_recipe,
    pick_kernel,
    recipe_digest,
)
from lab.matrix.orchestrate import DEFAULT_RELEASES

INDEX = "\n\n".join(f"Package: {name}\nVersion: 1\n" for name in (
    "linux-image-7.2.9+deb13-cloud-amd64", "linux-image-7.2.9+deb13-cloud-amd64-dbg",
    "linux-image-7.10.1+deb13-cloud-amd64", "linux-image-7.10.1+deb13-cloud-amd64-dbg",
    "linux-image-7.11.0+deb13-cloud-amd64",  # newest, but no -dbg: never picked
    "linux-image-7.2.9+deb13-amd64", "linux-image-7.2.9+deb13-amd64-dbg",
    "linux-image-cloud-amd64", "linux-image-cloud-amd64-dbg"))


def settings(tmp_path: Path, **flags: object) -> Settings:
    return load_settings(flags={"home": str(tmp_path / "home"), **flags}, environ={})


def test_the_one_release_list_drives_the_matrix() -> None:
    assert RELEASES == ("bullseye", "bookworm", "trixie", "trixie-backports", "sid")
    assert tuple(DEFAULT_RELEASES) == DEFAULT_MATRIX_RELEASES == RELEASES


def test_newest_kernel_with_a_dbg_package_is_picked() -> None:
    found = kernels_with_dbg(INDEX, "cloud-amd64")
    assert found == ["7.2.9+deb13-cloud-amd64", "7.10.1+deb13-cloud-amd64"]  # numeric order
    assert pick_kernel(found, "newest", "x") == "7.10.1+deb13-cloud-amd64"
    assert pick_kernel(found, "7.2.9", "x") == "7.2.9+deb13-cloud-amd64"
    assert pick_kernel(found, "7.2.9+deb13", "x") == "7.2.9+deb13-cloud-amd64"
    with pytest.raises(UsageError, match=r"Kernel '7\.11\.0' is not in x with a -dbg package\. "
                                         r"Available: 7\.2\.9\+deb13, 7\.10\.1\+deb13"):
        pick_kernel(found, "7.11.0", "x")
    with pytest.raises(LabError, match="no kernel with a matching -dbg"):
        pick_kernel([], "newest", "x")


def test_named_kernel_is_validated_and_changes_the_image(tmp_path: Path) -> None:
    keys = ensure_keys(tmp_path / "keys")
    newest = load_recipe(settings(tmp_path), "trixie-backports")
    named = load_recipe(settings(tmp_path, kernel="7.2.12"), "trixie-backports")
    assert (newest.kernel, named.kernel) == ("newest", "7.2.12")
    assert recipe_digest(newest, keys) != recipe_digest(named, keys)
    with pytest.raises(UsageError, match=r"Kernel '7; rm' is not a kernel version"):
        load_recipe(settings(tmp_path, kernel="7; rm"), "sid")
    with pytest.raises(UsageError, match=r"The trixie recipe has a fixed kernel"):
        load_recipe(settings(tmp_path, kernel="7.2.12"), "trixie")


def test_backports_kernel_comes_from_backports(tmp_path: Path) -> None:
    bpo = load_recipe(settings(tmp_path), "trixie-backports")
    assert (bpo.suite, bpo.kernel_source) == ("trixie", "trixie-backports")
    assert apt_sources(bpo) == ["http://deb.debian.org/debian",
                                "deb http://deb.debian.org/debian trixie-backports main"]
    packages = include_packages(bpo, "7.3.4+deb13-cloud-amd64")
    assert "linux-image-cloud-amd64" not in packages
    assert packages[-2:] == ["linux-image-7.3.4+deb13-cloud-amd64/trixie-backports",
                             "linux-headers-7.3.4+deb13-cloud-amd64/trixie-backports"]
    sid = load_recipe(settings(tmp_path), "sid")
    assert sid.moving and apt_sources(sid) == ["http://deb.debian.org/debian"]
    assert include_packages(sid, "7.2.13+deb14-cloud-amd64")[-1] == \
        "linux-headers-7.2.13+deb14-cloud-amd64"
    trixie = load_recipe(settings(tmp_path), "trixie")
    assert include_packages(trixie, "") == list(trixie.packages)
