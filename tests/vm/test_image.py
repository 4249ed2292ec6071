"""Image faults for real: a killed `image.build` and a tampered image (issue 12).

Both use a scratch FENTRY_LAB_HOME, so the shared cache and its images are never touched.
The kill test runs a real mmdebstrap (a minute of downloads) and kills invoke while apt and
dpkg run in the chroot with /proc, /sys and /dev mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.host import processes_of as qemu_pids
from lab.image.buildproc import mounts_below
from lab.image.cache import ARTEFACTS, image_directory, sha256_file
from lab.image.recipe import load_recipe
from tests.helpers import INVOKE, REPO

pytestmark = pytest.mark.vm


def chrooted_into(path: Path) -> list[int]:
    prefix = str(path.resolve()) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (os.readlink(entry / "root") + "/").startswith(prefix):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_image_build_leaves_no_process_and_no_mount(tmp_path: Path, sig: int) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "FENTRY_LAB_HOME": str(home)}
    proc = subprocess.Popen([INVOKE, "image.build", "--release", "bookworm"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # wait until dpkg works inside the mounted chroot
        seen.append(line)
        if "installing remaining packages" in line:
            break
    builds = list((home / "images").glob(".build-*"))
    assert builds, "".join(seen)
    time.sleep(5)
    assert mounts_below(builds[0]) or chrooted_into(builds[0]), "nothing to clean up yet"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    try:
        for _ in range(300):  # counted attempts: the watchdog needs a few seconds
            if not builds[0].exists() and not chrooted_into(home):
                break
            time.sleep(0.1)
        assert not chrooted_into(home), "apt/dpkg still running in the killed build"
        assert not mounts_below(home), "mounts left behind"
        assert not builds[0].exists(), "the half build was left behind"
    finally:
        for pid in chrooted_into(home):
            os.kill(pid, signal.SIGKILL)
        for point in mounts_below(home):
            subprocess.run(["umount", "--lazy", point], check=False)


def test_lab_up_refuses_a_tampered_image(tmp_path: Path) -> None:
    """A flipped byte in the cached disk: lab.up says to rebuild and boots nothing."""
    shared = load_settings()
    home = tmp_path / "home"
    shutil.copytree(shared.keys_dir, home / "keys")  # same keys: same image name
    settings = load_settings(flags={"home": str(home)}, environ={})
    directory = image_directory(settings, load_recipe(settings, "trixie"))
    directory.mkdir(parents=True)
    artefacts = {}
    for name in ARTEFACTS:
        (directory / name).write_bytes(os.urandom(4096))
        artefacts[name] = {"sha256": sha256_file(directory / name), "size": 4096}
    (directory / "manifest.json").write_text(json.dumps({
        "release": "trixie", "kernel_release": "6.12.0", "build_id": "0" * 40,
        "artefacts": artefacts, "boot": {}}))
    with (directory / "disk.qcow2").open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    env = {**os.environ, "FENTRY_LAB_HOME": str(home), "FENTRY_LAB_NAME": "im-tamper"}
    before = set(qemu_pids(home / "labs" / "im-tamper"))
    try:
        up = subprocess.run([INVOKE, "lab.up"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
        assert up.returncode == 1, up.stderr
        assert "no longer matches its manifest (disk.qcow2: sha256" in up.stderr
        assert "invoke image.build --force" in up.stderr and "Traceback" not in up.stderr
        assert set(qemu_pids(home / "labs" / "im-tamper")) == before
    finally:
        subprocess.run([INVOKE, "lab.destroy"], cwd=REPO, env=env, capture_output=True,
                       timeout=120, check=False)


@pytest.mark.parametrize("release", ["trixie-backports", "sid"])
def test_newest_kernels_run_the_acl_scenarios(tmp_path: Path, release: str) -> None:
    """acl-basic and acl-portable on the newest kernels (skipped until their image is built:
    `invoke image.build --release trixie-backports`, a few minutes each)."""
    from lab.image.cache import find_image

    image = find_image(load_settings(flags={"release": release}))
    if image is None:
        pytest.skip(f"no {release} image in the cache")
    name = f"im-{release.replace('-', '')[:10]}"
    env = {**os.environ, "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(tmp_path),
           "FENTRY_LAB_RELEASE": release}

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900, check=False)

    try:
        up = invoke("lab.up")
        assert up.returncode == 0, up.stderr
        for scenario in ("acl-basic", "acl-portable"):
            run = invoke("scenario.run", scenario)
            assert run.returncode == 0, run.stdout + run.stderr
            summary = json.loads((tmp_path / scenario / "latest" / "summary.json").read_text())
            assert summary["status"] == "passed"
            assert summary["kernel"] == image.kernel_release
    finally:
        invoke("lab.destroy")
        assert not qemu_pids(load_settings().labs_dir / name)
