"""The cache refuses a tampered image, and hashes only when a file changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.errors import LabError
from lab.image import cache
from lab.image.cache import ARTEFACTS, check_intact, find_image, image_directory, sha256_file
from lab.image.recipe import load_recipe


def fake_built_image(tmp_path: Path) -> tuple[object, Path]:
    settings = load_settings(flags={"home": str(tmp_path / "home")}, environ={})
    directory = image_directory(settings, load_recipe(settings, "trixie"))
    directory.mkdir(parents=True)
    artefacts = {}
    for name in ARTEFACTS:
        (directory / name).write_bytes(name.encode() * 1000)
        artefacts[name] = {"sha256": sha256_file(directory / name), "size": 0}
    (directory / "manifest.json").write_text(json.dumps(
        {"release": "trixie", "kernel_release": "6.12.1", "artefacts": artefacts}))
    return settings, directory


def test_find_image_refuses_a_flipped_byte(tmp_path: Path) -> None:
    settings, directory = fake_built_image(tmp_path)
    image = find_image(settings)  # type: ignore[arg-type]
    assert image is not None and image.kernel_release == "6.12.1"
    assert image.manifest["release"] == "trixie"  # the old dict-style access still works
    disk = directory / "disk.qcow2"
    data = bytearray(disk.read_bytes())
    data[10] ^= 1
    with disk.open("r+b") as f:  # in place, as a stray write would do
        f.write(bytes(data))
    with pytest.raises(LabError, match=r"no longer matches its manifest \(disk\.qcow2: sha256 .*"
                                       r"`invoke image\.build --force`"):
        find_image(settings)  # type: ignore[arg-type]


def test_only_the_first_check_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, directory = fake_built_image(tmp_path)
    image = find_image(settings)  # type: ignore[arg-type]
    assert image is not None
    hashed: list[Path] = []
    real = cache.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(cache, "sha256_file", counting)
    assert check_intact(image) == [] and hashed == []  # stamp matches: stat only
    (directory / "vmlinux").touch()  # a new mtime: hash again, still intact
    assert check_intact(image) == [] and len(hashed) == len(ARTEFACTS)
    (directory / "vmlinux").unlink()
    assert check_intact(image) == ["vmlinux: missing"]
