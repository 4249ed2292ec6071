"""report.html opened offline in headless Chromium: the DOM holds what the issue promises."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.results.report import write_report
from tests.helpers import REPO

DATA = REPO / "tests" / "data" / "report"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed "
                                "(./scripts/install.sh --test installs it)")


def chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars", *extra,
            page.as_uri()]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=True)


def render(name: str, tmp_path: Path) -> Path:
    bundle = tmp_path / name
    shutil.copytree(DATA / name, bundle)
    return write_report(bundle)[0]


def assert_self_contained(dom: str) -> None:
    assert not re.search(r"https?://", dom)
    assert "<script" not in dom and "url(" not in dom and " src=" not in dom
    for href in re.findall(r'href="([^"]*)"', dom):
        assert ":" not in href and not href.startswith("/"), href  # siblings in the bundle


def test_a_real_acl_basic_run(tmp_path: Path) -> None:
    page = render("acl-basic", tmp_path)
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout
    for row in ("static", "before", "attached", "after"):
        assert f'data-row="{row}"' in dom
    assert len(re.findall(r'class="insn [a-z]* ?patched"', dom)) == 4  # one per row
    tramp = re.search(r'id="trampoline-name">(bpf_trampoline_\d+)<', dom)
    assert tramp, "trampoline name"
    assert re.search(r"bpf_prog_[0-9a-f]+_\w+", dom) and "__bpf_prog_enter" in dom
    assert re.search(r"setfacl\[\d+\]</td><td>1000</td>.*= -1 EPERM", dom)
    assert_self_contained(dom)
    chromium(page, tmp_path / "profile", "--window-size=1200,2400",
             f"--screenshot={tmp_path / 'report.png'}")
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_run_that_erred(tmp_path: Path) -> None:
    page = render("error-acl-killed", tmp_path)
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout
    assert 'id="verdict">error<' in dom and "SSH connection to the lab was lost" in dom
    assert "missing: events.jsonl" in dom
    assert_self_contained(dom)
    chromium(page, tmp_path / "profile", "--window-size=1200,1600",
             f"--screenshot={tmp_path / 'error.png'}")
    assert (tmp_path / "error.png").stat().st_size > 10_000
