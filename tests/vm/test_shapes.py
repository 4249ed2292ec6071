"""Users' own programs on one real trixie lab, one scenario per group of upstream shapes
(scenarios/shapes-*.yaml, bpf/shapes/): a ring buffer not named `events` whose record type
is only in the DWARF, a perf buffer, a kprobe/kretprobe pair, counters in a global array and
in a map, a .rodata filter, a vmlinux.h shipped beside the source, a UAPI tracepoint-only
program under a plain .c name, a bpftrace script, a BCC Python tool, a tool with its own
libbpf loader. Each must pass, and leave its files in the bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.host import processes_of as qemu_pids
from tests.helpers import INVOKE, REPO


class Lab:
    def __init__(self, name: str, results: Path) -> None:
        self.name, self.results = name, results
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("FENTRY_LAB_")},
                    "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(results)}

    def __call__(self, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([INVOKE, *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def bundle(self, scenario: str) -> Path:
        return self.results / scenario / "latest"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tool = Lab(f"pytest-shapes-{os.getpid()}", tmp_path_factory.mktemp("results"))
    try:
        yield tool
    finally:
        tool("lab.destroy", timeout=120)
        lab_dir = load_settings().labs_dir / tool.name
        left = qemu_pids(str(lab_dir))
        for pid in left:  # never leave a VM behind, even when a test failed
            os.kill(pid, signal.SIGKILL)
        assert not left, f"qemu processes left running for lab {tool.name}: {left}"


@pytest.mark.parametrize("scenario", ["shapes-buffers", "shapes-maps", "shapes-tracepoint",
                                      "shapes-tools"])
def test_upstream_shapes_pass(lab: Lab, scenario: str) -> None:
    run = lab("scenario", "run", scenario)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    bundle = lab.bundle(scenario)
    summary = json.loads((bundle / "summary.json").read_text())
    assert summary["status"] == "passed"
    if scenario == "shapes-maps":
        maps = json.loads((bundle / "maps.json").read_text())
        assert maps["counters"][".rodata"]["globals"] == {"targ_uid": 1000}
    if scenario == "shapes-buffers":
        events = [json.loads(line) for line in (bundle / "events.jsonl").read_text()
                  .splitlines()]
        assert any(e.get("map") == "rb" and e.get("file", {}).get("name") == "passwd"
                   for e in events)
    if scenario == "shapes-tools":
        assert "Attaching 1 probe" in (bundle / "output" / "script.txt").read_text()
        check = lab("lab.ssh", "-c", "bpftool prog show | grep -c 'name on_entry' || true")
        assert check.stdout.strip() in ("0", ""), check.stdout  # the BCC tool's are gone
