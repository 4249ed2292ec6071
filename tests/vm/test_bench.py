"""The probe-cost benchmark on a real lab: every mode measured with its hits verified,
an untraceable function refused before building, a lab killed mid-run kept as partial.

One lab for the module, destroyed at the end with a check that no qemu of it is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.config import load_settings
from lab.host import processes_of as qemu_pids
from tests.helpers import INVOKE, REPO

pytestmark = pytest.mark.vm


class Bench:
    def __init__(self, name: str, results: Path) -> None:
        self.name = name
        self.results = results
        self.env = {**os.environ, "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(results)}
        self.lab_dir = load_settings().labs_dir / name

    def __call__(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([INVOKE, *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def latest(self) -> dict[str, Any]:
        value = json.loads((self.results / "bench" / "latest" / "bench.json").read_text())
        assert isinstance(value, dict)
        return value


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tool = Bench(f"bn-pytest-{os.getpid()}", tmp_path_factory.mktemp("results"))
    try:
        yield tool
    finally:
        tool("lab.destroy", timeout=120)
        left = qemu_pids(str(tool.lab_dir))
        for pid in left:  # never leave a VM behind, even when the test failed
            os.kill(pid, signal.SIGKILL)
        assert not left, f"qemu processes left running for lab {tool.name}: {left}"


def test_every_mode_is_measured_and_its_hits_verified(bench: Bench) -> None:
    run = bench("bench.probes", "--samples", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    result = bench.latest()
    assert result["status"] == "passed"
    modes = {m["mode"]: m for m in result["kernels"][0]["modes"]}
    assert set(modes) == {"base", "fentry", "fexit", "fentry+fexit", "kprobe", "kretprobe",
                          "kprobe-multi", "raw-tp"}
    for name, mode in modes.items():
        assert mode["status"] == "measured" and mode["verified"], mode
        assert mode["median_calls_s"] > 0
        if name != "base":
            assert all(v == mode["calls"] > 0 for v in mode["hits"].values()), mode
    assert modes["kprobe"]["ratio_to_kprobe"] == 1.0
    for name in modes:
        assert name in run.stdout
    assert "emulated CPU" in run.stdout or result["kernels"][0]["accel"] == "kvm"
    folder = bench.results / "bench" / "latest"
    assert (folder / "bench.md").is_file() and "<svg" in (folder / "bench.svg").read_text()


def test_an_untraceable_function_is_refused_by_name(bench: Bench) -> None:
    run = bench("bench.probes", "--function", "no_such_function_xyz", "--samples", "1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no_such_function_xyz is not a traceable function" in run.stderr
    assert "benchmark built" not in run.stderr


def test_a_lab_that_dies_mid_benchmark_keeps_the_modes_measured(bench: Bench) -> None:
    proc = subprocess.Popen([INVOKE, "bench.probes", "--samples", "2"], cwd=REPO,
                            env=bench.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "bench trixie: round 1/2: fexit" in line:
                break
        time.sleep(1)
        for pid in qemu_pids(str(bench.lab_dir)):  # the lab this module started
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err
    result = bench.latest()
    assert result["status"] == "error" and result["error"]
    measured = [m["mode"] for m in result["kernels"][0]["modes"]]
    assert measured[:2] == ["base", "fentry"]
    assert result["kernels"][0]["rounds"] == 1
