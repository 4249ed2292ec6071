"""Build the image twice from the same recipe and keys and compare the artefacts.

    .venv/bin/python scripts/check-reproducible.py [--release trixie]

Each build goes to its own scratch cache (sharing the lab's keys, which are inputs of the
image). Prints each artefact's sha256 from both builds; when the disks differ, names the
first differing block of the ext4 image and the file that owns it (debugfs icheck/ncheck).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.config import load_settings  # noqa: E402
from lab.image.build import ARTEFACTS, Image, build_image  # noqa: E402


def build_in(home: Path, keys: Path, release: str) -> Image:
    shutil.copytree(keys, home / "keys")
    return build_image(load_settings(flags={"home": str(home), "release": release}))


def first_difference(a: Path, b: Path, scratch: Path) -> str:
    raws = []
    for i, disk in enumerate((a, b)):
        raw = scratch / f"{i}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
        raws.append(raw)
    cmp = subprocess.run(["cmp", str(raws[0]), str(raws[1])], capture_output=True, text=True,
                         check=False).stdout.strip()
    if not cmp:
        return "the raw filesystems are identical (only qcow2 metadata differs)"
    offset = int(cmp.split("byte ")[1].split(",")[0]) - 1
    block = offset // 4096
    icheck = subprocess.run(["debugfs", "-R", f"icheck {block}", str(raws[0])],
                            capture_output=True, text=True, check=False).stdout.split()
    detail = f"first difference at byte {offset} (block {block})"
    if len(icheck) >= 4 and icheck[-1].isdigit():
        ncheck = subprocess.run(["debugfs", "-R", f"ncheck {icheck[-1]}", str(raws[0])],
                                capture_output=True, text=True, check=False).stdout
        detail += f", inode {icheck[-1]}: {ncheck.strip().splitlines()[-1]}"
    else:
        detail += " (filesystem metadata, not file data)"
    return detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="trixie")
    args = parser.parse_args()
    keys = load_settings().keys_dir
    with tempfile.TemporaryDirectory(prefix="fentry-lab-repro-", dir=Path.home()) as scratch:
        base = Path(scratch)
        first = build_in(base / "a", keys, args.release)
        second = build_in(base / "b", keys, args.release)
        hashes = [{name: str(img.manifest.artefacts[name]["sha256"])
                   for name in ARTEFACTS} for img in (first, second)]
        for name in ARTEFACTS:
            h1, h2 = hashes[0][name], hashes[1][name]
            print(f"{name:12} {'same' if h1 == h2 else 'DIFFERS'}  {h1[:16]}  {h2[:16]}")
        same = hashes[0] == hashes[1]
        if first.manifest.packages != second.manifest.packages:
            print("package versions differ: the mirror changed between the builds")
        if hashes[0]["disk.qcow2"] != hashes[1]["disk.qcow2"]:
            print(first_difference(first.disk, second.disk, base))
        print("reproducible" if same else "NOT reproducible")


if __name__ == "__main__":
    main()
