"""Every shipped scenario on one real trixie lab, and what a run does when things go wrong.

One module-scoped lab (name rn-scn-PID) serves every test; it is destroyed at the end and a
final check fails the module if any qemu of it is still running. Tests drive the CLI in a
subprocess as a user would, and never see a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.host import processes_of as qemu_pids
from tests.helpers import INVOKE, REPO

SCENARIOS = REPO / "scenarios"
BASIC = (SCENARIOS / "acl-basic.yaml").read_text()


class Cli:
    def __init__(self, name: str, results: Path) -> None:
        self.name = name
        self.results = results
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("FENTRY_LAB_")},
                    "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(results)}
        if "FENTRY_LAB_HOME" in os.environ:
            self.env["FENTRY_LAB_HOME"] = os.environ["FENTRY_LAB_HOME"]

    @property
    def lab_dir(self) -> Path:
        return load_settings().labs_dir / self.name

    def argv(self, *args: str) -> list[str]:
        return [INVOKE, *args]

    def __call__(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def summary(self, scenario: str) -> dict[str, object]:
        value = json.loads((self.results / scenario / "latest" / "summary.json").read_text())
        assert isinstance(value, dict)
        return value

    def guest(self, *command: str) -> subprocess.CompletedProcess[str]:
        return self("lab.ssh", "-c", " ".join(command), timeout=120)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    tool = Cli(f"rn-scn-{os.getpid()}", tmp_path_factory.mktemp("results"))
    try:
        yield tool
    finally:
        tool("lab.destroy", timeout=120)
        left = qemu_pids(str(tool.lab_dir))
        for pid in left:  # never leave a VM behind, even when a test failed
            os.kill(pid, signal.SIGKILL)
        assert not left, f"qemu processes left running for lab {tool.name}: {left}"


@pytest.fixture()
def lab(cli: Cli) -> Cli:
    """The module's lab, up (booted on first use; tests may run alone or in any order)."""
    up = cli("lab.up")
    assert up.returncode == 0, up.stderr
    return cli


def scenario_file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(text.replace("name: acl-basic", f"name: {name}", 1))
    return path


@pytest.mark.parametrize("scenario", [
    "acl-basic", "acl-default", "acl-remove", "acl-portable",
    pytest.param("acl-bcc", marks=pytest.mark.slow),
])
def test_shipped_scenario_passes(lab: Cli, scenario: str) -> None:
    proc = lab("scenario", "run", scenario)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = lab.summary(scenario)
    assert done["status"] == "passed" and done["error"] is None
    checks = done["expectations"]
    assert isinstance(checks, list) and checks and all(c["ok"] for c in checks)


def tracing_programs(lab: Cli) -> list[dict[str, object]]:
    proc = lab.guest("bpftool", "-j", "prog", "show")
    assert proc.returncode == 0, proc.stderr
    return [p for p in json.loads(proc.stdout) if p.get("type") == "tracing"]


def test_ctrl_c_detaches_probes_and_writes_the_summary(lab: Cli, tmp_path: Path) -> None:
    text = BASIC.replace("steps:\n", "steps:\n  - name: wait\n    run: [sleep, \"60\"]\n"
                         "    timeout: 120\n", 1)
    path = scenario_file(tmp_path, "rn-ctrl-c", text)
    proc = subprocess.Popen(lab.argv("scenario", "run", str(path)), cwd=REPO, env=lab.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    live = lab.results / "rn-ctrl-c" / "latest" / "live-text.json"
    for _ in range(1200):  # until the probes are attached (the live read after attach)
        if live.exists() and "attached" in live.read_text():
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.communicate()}")
        time.sleep(0.25)
    assert tracing_programs(lab), "the probes should be attached now"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, out + err
    done = lab.summary("rn-ctrl-c")
    assert (done["status"], done["error"]) == ("error", "interrupted (Ctrl-C)")
    assert tracing_programs(lab) == []  # detached


def test_two_concurrent_runs_on_one_lab_both_pass(lab: Cli) -> None:
    procs = [subprocess.Popen(lab.argv("scenario", "run", "acl-basic"), cwd=REPO, env=lab.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err
    assert any("waiting for it to finish" in err for _, err in results)


def test_release_other_than_the_labs_is_refused(lab: Cli) -> None:
    proc = lab("scenario", "run", "acl-basic", "--release", "bullseye")
    assert proc.returncode == 1
    assert f"Lab '{lab.name}' is up on trixie" in proc.stderr + proc.stdout
    assert "but this run asks for bullseye" in proc.stderr + proc.stdout
    assert lab.summary("acl-basic")["status"] == "error"


def test_setup_timeout_and_missing_user_messages(lab: Cli, tmp_path: Path) -> None:
    slow = BASIC.replace('run: [sh, -c, "rm -f /tmp/file1 && touch /tmp/file1"]',
                         'run: [sleep, "30"]\n    timeout: 2', 1)
    proc = lab("scenario", "run", str(scenario_file(tmp_path, "rn-slow-setup", slow)))
    assert proc.returncode == 1
    assert "Setup step 'create /tmp/file1 without an ACL' timed out after 2 s" in proc.stdout
    nobody = BASIC.replace('run: [sh, -c, "rm -f /tmp/file1 && touch /tmp/file1"]',
                           'run: ["true"]\n    as: rnnobody', 1)
    proc = lab("scenario", "run", str(scenario_file(tmp_path, "rn-no-user", nobody)))
    assert proc.returncode == 1
    assert "runuser: user rnnobody does not exist" in proc.stdout


FILL = ("import os\n"
        "fd = os.open('/rn-fill', os.O_CREAT | os.O_WRONLY)\n"
        "size, at = 1 << 34, 0\n"
        "while size >= 4096:\n"
        "    try:\n"
        "        os.posix_fallocate(fd, at, size)\n"
        "        at += size\n"
        "    except OSError:\n"
        "        size //= 2\n")


def test_full_guest_disk_is_named_with_the_fix(lab: Cli) -> None:
    # No built probes in the guest, so the run must write there; then fill the root disk.
    prepared = lab.guest("rm", "-rf", "/var/cache/fentry-lab/build", "&&", "python3", "-c",
                         shlex.quote(FILL))
    assert prepared.returncode == 0, prepared.stderr
    try:
        proc = lab("scenario", "run", "acl-basic")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "the guest's disk is full (No space left on device)" in proc.stdout
        assert "`invoke lab.destroy && invoke lab.up`" in proc.stdout
        assert lab.summary("acl-basic")["status"] == "error"
    finally:
        assert lab.guest("rm", "-f", "/rn-fill").returncode == 0
    again = lab("scenario", "run", "acl-basic")
    assert again.returncode == 0, again.stdout + again.stderr


def test_guest_panic_mid_run_is_a_lab_failure_naming_it(lab: Cli, tmp_path: Path) -> None:
    text = BASIC.replace("steps:\n", "steps:\n  - name: crash the kernel\n    run: [sh, -c, "
                         "\"echo c > /proc/sysrq-trigger\"]\n", 1)
    proc = lab("scenario", "run", str(scenario_file(tmp_path, "rn-panic", text)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "The guest kernel crashed during the run (Kernel panic" in proc.stdout
    assert "Last lines of the serial log" in proc.stdout
    done = lab.summary("rn-panic")
    assert done["status"] == "error" and "Kernel panic" in str(done["error"])
    assert (lab.results / "rn-panic" / "latest" / "live-text.json").exists()  # partial kept
