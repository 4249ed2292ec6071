"""Image recipes, verification and the build's failure paths (no mirror traffic here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.config import Settings, load_settings
from lab.errors import LabError
from lab.host import require_tools
from lab.image import build as image_mod
from lab.image.build import (
    ARTEFACTS,
    Image,
    build_image,
    load_recipe,
    missing_packages,
    recipe_digest,
    sha256_file,
    verify_image,
)
from lab.image.cache import image_directory, prune
from lab.image.keys import ensure_keys
from tests.helpers import REPO


def scratch_settings(tmp_path: Path, **flags: object) -> Settings:
    return load_settings(flags={"home": str(tmp_path / "home"), **flags}, environ={})


def fake_image(directory: Path) -> Image:
    directory.mkdir(parents=True)
    artefacts: dict[str, object] = {}
    for name in ARTEFACTS:
        (directory / name).write_bytes(name.encode() * 1000)
        artefacts[name] = {"sha256": sha256_file(directory / name), "size": 0}
    manifest: dict[str, object] = {"release": "trixie", "artefacts": artefacts}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return Image(directory, manifest)


def test_verify_passes_then_fails_on_one_tampered_byte(tmp_path: Path) -> None:
    img = fake_image(tmp_path / "img")
    assert verify_image(img) == []
    disk = img.disk.read_bytes()
    img.disk.write_bytes(disk[:100] + bytes([disk[100] ^ 1]) + disk[101:])
    problems = verify_image(img)
    assert len(problems) == 1 and problems[0].startswith("disk.qcow2: sha256 ")
    img.vmlinux.unlink()
    assert "vmlinux: missing" in verify_image(img)


def test_unknown_release_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"Unknown release 'forky'\. Known releases: .*trixie"):
        load_recipe(scratch_settings(tmp_path), "forky")
    with pytest.raises(LabError, match="Unknown release"):
        load_recipe(scratch_settings(tmp_path), "../etc/passwd")


def test_recipe_digest_follows_inputs_and_keys(tmp_path: Path) -> None:
    settings = scratch_settings(tmp_path)
    recipe = load_recipe(settings, "trixie")
    keys = ensure_keys(settings.keys_dir)
    first = recipe_digest(recipe, keys)
    assert first == recipe_digest(recipe, keys)
    other = load_recipe(settings.with_overrides({"mirror": "http://127.0.0.1:9/debian"}))
    assert recipe_digest(other, keys) != first
    other_keys = ensure_keys(tmp_path / "other-keys")
    assert recipe_digest(recipe, other_keys) != first


def test_prune_keeps_current_and_used_images(tmp_path: Path) -> None:
    settings = scratch_settings(tmp_path)
    current = image_directory(settings, load_recipe(settings, "trixie"))
    used = settings.images_cache / "trixie-0123456789ab"
    old = settings.images_cache / "trixie-ba9876543210"
    for directory in (current, used, old):
        fake_image(directory)
    assert prune(settings, keep={str(used)}) == [old]
    assert current.exists() and used.exists() and not old.exists()


def test_keys_are_private(tmp_path: Path) -> None:
    keys = ensure_keys(tmp_path / "keys")
    for path in (keys.client_private, keys.host_private):
        assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert keys.host_key_line()[0] == "ssh-ed25519"


def test_unreachable_mirror_is_named(tmp_path: Path) -> None:
    settings = scratch_settings(tmp_path, mirror="http://127.0.0.1:9/debian")
    with pytest.raises(LabError, match=r"The Debian mirror http://127.0.0.1:9/debian did not "
                                       r"answer for suite 'trixie'"):
        build_image(settings)
    assert not list((settings.images_cache).glob(".build-*"))


def test_not_enough_disk_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_mod, "MIN_FREE_BYTES", 1 << 62)
    with pytest.raises(LabError, match=r"GiB free in .*an image build needs"):
        build_image(scratch_settings(tmp_path))


def test_missing_host_tool_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabError, match=r"no-such-tool-xyz \(package pkg-xyz\).*apt-get install "
                                       r"pkg-xyz"):
        require_tools({"no-such-tool-xyz": "pkg-xyz", "sh": "dash"})


def test_missing_package_is_recognised_in_apt_output() -> None:
    assert missing_packages("E: Unable to locate package bpftoolz") == ["bpftoolz"]
    assert missing_packages("E: Package 'clang-99' has no installation candidate") == ["clang-99"]
    assert missing_packages("I: downloading packages with apt...") == []


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of a build removes the temporary build and keeps no image."""
    def interrupted(recipe: object, keys: object, tree: Path, out: Path, epoch: int,
                    kernel: str = "", *, expired: bool = False) -> None:
        tree.mkdir()
        (tree / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(image_mod, "_mirror_release", lambda recipe: (1700000000, False))
    monkeypatch.setattr(image_mod, "_mmdebstrap", interrupted)
    settings = scratch_settings(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        build_image(settings)
    assert list(settings.images_cache.iterdir()) == [settings.images_cache / ".lock-trixie"]


def test_stale_build_of_a_dead_builder_is_removed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stale = cache / ".build-trixie-x"
    stale.mkdir(parents=True)
    (stale / "builder.pid").write_text("999999999")
    live = cache / ".build-trixie-y"
    live.mkdir()
    (live / "builder.pid").write_text(str(os.getpid()))
    image_mod._remove_stale_builds(cache)
    assert not stale.exists() and live.exists()


@pytest.mark.vm
def test_cached_image_verifies_and_rebuild_is_a_quick_no_op() -> None:
    """The real image (built on first use): image.build again is a no-op, verify passes."""
    invoke = str(Path(sys.executable).parent / "invoke")
    first = subprocess.run([invoke, "image.build"], cwd=REPO, capture_output=True, text=True,
                           timeout=1800, check=False)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([invoke, "image.build"], cwd=REPO, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0 and "already built" in again.stderr
    verify = subprocess.run([invoke, "image.verify"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=False)
    assert verify.returncode == 0, verify.stderr
    assert "all artefacts match the manifest" in verify.stdout
    manifest = json.loads((Path(first.stdout.strip()) / "manifest.json").read_text())
    assert manifest["kernel_release"].startswith("6.12.")
    assert len(manifest["build_id"]) == 40 and manifest["packages"]["bpftrace"]
