"""`pip install <clone>` into a fresh virtual environment, then `fentry-lab` from elsewhere.

The wheel must carry the recipes, probes, scenarios (with schema.json) and guest helper,
and a user's own scenario in another directory must be found before the shipped ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

TOP_LEVEL_SKIPPED = {".venv", ".git", "results", "build", ".vagrant", "benchmarks", "tests",
                     "fentry_lab.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def skipped(directory: str, names: list[str]) -> set[str]:
    """What not to copy: the clone's own environments, caches and results."""
    top = Path(directory) == REPO
    return {n for n in names if n == "__pycache__" or (top and n in TOP_LEVEL_SKIPPED)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the project installed from a copy of the clone (no in-tree build dirs)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=skipped)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                           str(source)], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(source)  # nothing may be read from the copy of the clone afterwards
    return venv / "bin" / "fentry-lab"


def user_dir(tmp_path: Path) -> Path:
    """A directory of the user's own: one scenario of theirs and one probe of theirs."""
    mine = tmp_path / "my-probes"
    (mine / "scenarios").mkdir(parents=True)
    (mine / "bpf" / "mine").mkdir(parents=True)
    text = (REPO / "scenarios" / "acl-basic.yaml").read_text()
    text = text.replace("name: acl-basic", "name: my-acl")
    text = text.replace("bpf/acl/", "bpf/mine/")  # every probe of theirs (one root each)
    (mine / "scenarios" / "my-acl.yaml").write_text(text)
    for part in ("fentry.bpf.c", "fexit.bpf.c", "acl_event.h"):
        shutil.copy(REPO / "bpf" / "acl" / part, mine / "bpf" / "mine" / part)
    return mine


def run(fentry_lab: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENTRY_LAB_")}
    env["FENTRY_LAB_HOME"] = str(cwd / "home")
    return subprocess.run([str(fentry_lab), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def test_version_and_list_outside_the_clone(installed: Path, tmp_path: Path) -> None:
    assert run(installed, "--version", cwd=tmp_path).stdout.strip() == "fentry-lab 0.1.0"
    listing = run(installed, "--list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "scenario.run (scenario)" in listing.stdout


def test_shipped_scenario_validates_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    proc = run(installed, "scenario", "validate", "acl-basic", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages/lab/_data/scenarios/acl-basic.yaml: valid" in proc.stdout


def test_users_own_scenario_from_another_directory(installed: Path, tmp_path: Path) -> None:
    mine = user_dir(tmp_path)
    proc = run(installed, "scenario", "validate", "my-acl", cwd=mine)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{mine / 'scenarios' / 'my-acl.yaml'}: valid"
    listing = run(installed, "scenario", "list", "--json", cwd=mine)
    names = [line for line in listing.stdout.splitlines() if '"name"' in line]
    assert any("my-acl" in line for line in names)
    assert any("acl-basic" in line for line in names)
    elsewhere = run(installed, "scenario", "validate", "my-acl", "--scenarios",
                    str(mine / "scenarios"), cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_the_wheel_carries_the_guest_files(installed: Path) -> None:
    code = ("from lab.config import SHIPPED; from lab.run.probes import pack_sources;"
            "from lab.scenario.load import load_scenario; import io, tarfile;"
            "probes = load_scenario(SHIPPED / 'scenarios' / 'acl-basic.yaml').probes;"
            "names = tarfile.open(fileobj=io.BytesIO(pack_sources(SHIPPED / 'bpf', probes)))"
            ".getnames();"
            "print(SHIPPED); print(' '.join(names))")
    proc = subprocess.run([str(installed.parent / "python"), "-c", code], capture_output=True,
                          text=True, timeout=60, check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr
    root, names = proc.stdout.splitlines()
    assert root.endswith("site-packages/lab/_data")
    for name in ("bpf/loader/lab-loader.c", "bpf/Makefile", "bpf/acl/fentry.bpf.c",
                 "guest/fentry_lab_guest.py", "guest/kallsyms.py", "guest/later.py",
                 "guest/live.py", "guest/elf.py"):
        assert name in names.split()
    assert (Path(root) / "images" / "customize.sh").stat().st_mode & 0o100


def python39() -> str | None:
    """The oldest guest Python (bullseye's 3.9), if this machine has one."""
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))  # not the shim
    candidates = [*map(str, pyenv), "/usr/bin/python3.9"]
    return next((c for c in candidates if Path(c).is_file()), None)


@pytest.mark.skipif(python39() is None, reason="no Python 3.9 on this machine")
def test_guest_code_compiles_under_the_oldest_guest_python() -> None:
    # Ruff checks these files against py39 (per-file-target-version); this compiles them.
    files = [*sorted((REPO / "lab" / "guest").glob("*.py")), REPO / "lab" / "elf.py"]
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f).read(), f, 'exec')\n"
    proc = subprocess.run([str(python39()), "-c", code, *map(str, files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
