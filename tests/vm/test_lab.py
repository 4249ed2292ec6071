"""The real thing: the trixie image, QEMU (TCG here), the guest's sshd, BPF in its kernel.

Tests drive the CLI as a user would (`invoke ...` in a subprocess). Each lab they start
has its own name and is destroyed at the end; a final check fails the module if any
qemu of theirs is still running. The image is built on first use and cached.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.errors import LabError
from lab.host import processes_of as qemu_pids
from lab.ssh import Session
from tests.helpers import INVOKE, REPO

pytestmark = pytest.mark.vm

SEED = REPO / "scenarios" / "acl-basic.yaml"




class Cli:
    def __init__(self, name: str, results: Path) -> None:
        self.name = name
        self.results = results
        self.env = {**os.environ, "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(results)}

    @property
    def lab_dir(self) -> Path:
        return load_settings().labs_dir / self.name

    def __call__(self, *args: str, timeout: float = 900,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([INVOKE, *args], cwd=REPO, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def state(self) -> dict[str, object]:
        value = json.loads((self.lab_dir / "state.json").read_text())
        assert isinstance(value, dict)
        return value

    def scenario_file(self, tmp: Path, name: str, text: str) -> Path:
        path = tmp / f"{name}.yaml"
        path.write_text(text.replace("name: acl-basic", f"name: {name}", 1))
        return path


def destroy_and_check(cli: Cli) -> None:
    cli("lab.destroy", timeout=120)
    left = qemu_pids(str(cli.lab_dir))
    for pid in left:  # never leave a VM behind, even when the test failed
        os.kill(pid, signal.SIGKILL)
    assert not left, f"qemu processes left running for lab {cli.name}: {left}"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    tool = Cli(f"vm-pytest-{os.getpid()}", tmp_path_factory.mktemp("results"))
    try:
        yield tool
    finally:
        destroy_and_check(tool)


@pytest.fixture()
def other_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    tool = Cli(f"vm-pytest-{os.getpid()}-{request.node.name[5:25]}", tmp_path / "results")
    try:
        yield tool
    finally:
        destroy_and_check(tool)


@pytest.fixture()
def lab(cli: Cli) -> Cli:
    """The module's lab, up (booted on first use; tests may run alone or in any order)."""
    up = cli("lab.up")
    assert up.returncode == 0, up.stderr
    return cli


def summary(cli: Cli, scenario: str) -> dict[str, object]:
    value = json.loads((cli.results / scenario / "latest" / "summary.json").read_text())
    assert isinstance(value, dict)
    return value


def test_lab_up_ssh_status(cli: Cli) -> None:
    up = cli("lab.up")
    assert up.returncode == 0, up.stderr
    assert "is up in" in up.stderr and "127.0.0.1" in up.stdout
    assert "running emulated under TCG" in up.stderr or "kvm" in up.stderr

    again = cli("lab.up")
    assert again.returncode == 0 and "already up" in again.stderr

    uname = cli("lab.ssh", "-c", "uname -r")
    assert uname.returncode == 0 and uname.stdout.startswith("6.12."), uname
    assert cli("lab.ssh", "-c", "exit 3").returncode == 3

    status = cli("lab.status", "--name", cli.name)
    row = status.stdout.splitlines()[1].split()
    assert row[0] == cli.name and row[-1] == "up", status.stdout

    logs = cli("lab.logs", "--lines", "5")
    assert "fentry-lab: ready" in logs.stdout


def test_seed_scenario_passes_with_everything_collected(lab: Cli) -> None:
    cli = lab
    run = cli("scenario", "run", "acl-basic")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "scenario acl-basic: PASSED" in run.stdout
    bundle = cli.results / "acl-basic" / "latest"
    result = summary(cli, "acl-basic")
    assert result["status"] == "passed" and str(result["kernel"]).startswith("6.12.")
    assert result["accel"] in ("tcg", "kvm") and result["release"] == "trixie"

    events = [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]
    seen = {(e["probe"], e["dentry"], e.get("retval")) for e in events}
    assert {("fentry", "file1", None), ("fexit", "file1", 0), ("fentry", "passwd", None),
            ("fexit", "passwd", -1)} <= seen
    assert all(e["comm"] and e["pid"] and e["acl_name"] for e in events)

    trace = (bundle / "trace_pipe.txt").read_text()
    assert "do_set_acl: dentry=passwd, acl_name=system.posix_acl_access, retval=-1" in trace

    live = json.loads((bundle / "live-text.json").read_text())["do_set_acl"]
    nop5 = "0f 1f 44 00 00"
    assert live["before"]["bytes"][12:26] == nop5, live["before"]
    assert live["attached"]["bytes"][12:14] == "e8", live["attached"]
    assert live["attached"]["call_target"]["symbol"].startswith("bpf_trampoline_")
    assert live["after"]["bytes"][12:26] == nop5, live["after"]

    fentry = (bundle / "objdump-__fentry__.txt").read_text()
    assert "endbr64" in fentry and "__x86_return_thunk" in fentry and fentry.count("nop") >= 9
    target = (bundle / "objdump-do_set_acl.txt").read_text().splitlines()
    assert "endbr64" in target[2] and "call" in target[3] and "<__fentry__>" in target[3]
    assert "struct mnt_idmap * idmap" in (bundle / "bpftrace-lv.txt").read_text()
    steps = [json.loads(line) for line in (bundle / "steps.jsonl").read_text().splitlines()]
    assert steps[-1]["user"] == "test" and steps[-1]["exit_status"] == 1
    kernel = json.loads((bundle / "kernel.json").read_text())
    assert kernel["build_id_running"] == kernel["build_id_debug_vmlinux"]
    assert (bundle / "junit.xml").read_text().count("<testcase") == len(result["expectations"])  # type: ignore[arg-type]


def test_wrong_expectation_fails_and_says_what_differed(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    text = SEED.read_text().replace("match: {function: do_set_acl, dentry: passwd, retval: -1}",
                                    "match: {function: do_set_acl, dentry: passwd, retval: 0}")
    path = cli.scenario_file(tmp_path, "acl-wrong", text)
    run = cli("scenario", "run", str(path))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "[FAILED] fexit event function=do_set_acl dentry=passwd retval=0" in run.stdout
    assert "expected exactly 1; saw 0 matching" in run.stdout
    assert "retval=-1" in run.stdout  # the events it did see
    assert summary(cli, "acl-wrong")["status"] == "failed"


def test_step_timeout_and_huge_output_are_bounded(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    text = SEED.read_text().replace("steps:\n", """steps:
  - name: prints 100 MB
    shell: "head -c 100000000 /dev/zero | tr '\\\\0' x"
    timeout: 120
  - name: hangs
    run: [sleep, "600"]
    timeout: 3
""", 1)
    path = cli.scenario_file(tmp_path, "acl-hang", text)
    started = time.monotonic()
    run = cli("scenario", "run", str(path))
    assert run.returncode == 1, run.stdout + run.stderr
    assert time.monotonic() - started < 240
    assert "[FAILED] step 'hangs' exit status: expected exit 0; saw timed out after 3 s" \
        in run.stdout
    bundle = cli.results / "acl-hang" / "latest"
    steps = [json.loads(line) for line in (bundle / "steps.jsonl").read_text().splitlines()]
    big = next(s for s in steps if s["name"] == "prints 100 MB")
    assert big["exit_status"] == 0 and "more bytes not shown" in big["stdout"]
    assert (bundle / "steps.jsonl").stat().st_size < 1_000_000
    assert summary(cli, "acl-hang")["status"] == "failed"
    # The probes were detached and the lab is still usable.
    assert cli("lab.ssh", "-c", "! pgrep -x lab-loader").returncode == 0


def test_absent_function_stops_at_preflight(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    text = SEED.read_text().replace("functions: [do_set_acl]", "functions: [no_such_fn_xyz]")
    path = cli.scenario_file(tmp_path, "acl-absent", text)
    run = cli("scenario", "run", str(path))
    assert run.returncode == 1
    assert "Preflight failed" in run.stdout and "`no_such_fn_xyz` is absent in 6.12." in run.stdout
    assert summary(cli, "acl-absent")["status"] == "error"


def test_missing_probe_source_is_named(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    text = SEED.read_text().replace("source: bpf/acl/fentry.bpf.c",
                                    "source: bpf/acl/nope.bpf.c")
    run = cli("scenario", "run", str(cli.scenario_file(tmp_path, "acl-nope", text)))
    assert run.returncode == 1
    # Refused when the scenario is read, before the lab is touched (no bundle at all).
    assert "probes[0].source: 'bpf/acl/nope.bpf.c' does not exist" in run.stderr
    assert not (cli.results / "acl-nope").exists()


def test_verifier_rejection_shows_the_log(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    text = SEED.read_text().replace("source: bpf/acl/fentry.bpf.c",
                                    "source: bpf/tests/verifier-reject.bpf.c")
    path = cli.scenario_file(tmp_path, "acl-verifier", text)
    run = cli("scenario", "run", str(path))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "map_value_or_null" in run.stdout
    bundle = cli.results / "acl-verifier" / "latest"
    assert "map_value_or_null" in (bundle / "loader.log").read_text()
    assert summary(cli, "acl-verifier")["status"] == "error"


def test_bcc_loader_runs_the_same_probes(lab: Cli) -> None:
    cli = lab
    run = cli("scenario", "run", "acl-bcc")
    assert run.returncode == 0, run.stdout + run.stderr
    events = [json.loads(line) for line in
              (cli.results / "acl-bcc" / "latest" / "events.jsonl").read_text().splitlines()]
    assert {"probe_name": "bcc", "probe": "fexit", "dentry": "passwd", "retval": -1}.items() \
        <= next(e for e in events if e["dentry"] == "passwd" and e["probe"] == "fexit").items()


def test_pinned_host_key_is_enforced(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    from lab.vm.qemu import QemuBackend

    target = QemuBackend(load_settings(flags={"name": cli.name})).ssh_target()
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    other = type(target)(target.host, target.port, target.user, target.key_file,
                         target.host_key_type, key.with_suffix(".pub").read_text().split()[1])
    with pytest.raises(LabError, match="Refusing to connect"):
        Session(other).connect()
    with Session(target) as ssh:  # the pinned key still works
        assert ssh.run(["true"]).exit_status == 0


def test_vm_killed_mid_run_then_up_recovers(lab: Cli, tmp_path: Path) -> None:
    cli = lab
    text = SEED.read_text().replace("steps:\n", """steps:
  - name: long step
    run: [sleep, "120"]
    timeout: 200
""", 1)
    path = cli.scenario_file(tmp_path, "acl-killed", text)
    pid = int(str(cli.state()["pid"]))
    bundle_root = cli.results / "acl-killed"

    def kill_when_attached() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            live = bundle_root / "latest" / "live-text.json"
            if live.exists() and '"attached"' in live.read_text():
                time.sleep(1.0)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_attached)
    killer.start()
    run = cli("scenario", "run", str(path), timeout=600)
    killer.join()
    assert run.returncode == 2, run.stdout + run.stderr
    result = summary(cli, "acl-killed")
    assert result["status"] == "error" and result["error"]
    assert (bundle_root / "latest" / "live-text.json").exists()  # partial results kept

    status = cli("lab.status", "--name", cli.name)
    assert status.stdout.splitlines()[1].split()[-1] == "dead", status.stdout
    up = cli("lab.up")
    assert up.returncode == 0 and "died" in up.stderr, up.stderr
    assert cli("lab.ssh", "-c", "true").returncode == 0


def test_down_leaves_no_qemu(lab: Cli) -> None:
    cli = lab
    pid = int(str(cli.state()["pid"]))
    down = cli("lab.down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert pid not in qemu_pids(str(cli.lab_dir))
    assert cli("lab.status", "--name", cli.name).stdout.splitlines()[1].split()[-1] == "down"
    assert cli("lab.down").returncode == 0  # already down: says so, exit 0
    assert cli("lab.ssh", "-c", "true").returncode != 0


def test_kernel_panic_is_reported_and_cleaned_up(other_lab: Cli) -> None:
    # A later root= wins: the kernel cannot mount it and panics.
    up = other_lab("lab.up", env={"FENTRY_LAB_KERNEL_ARGS": "root=/dev/nonexistent"},
                   timeout=300)
    assert up.returncode == 2, up.stderr
    # The kernel panics; or, booted through an initramfs (snapshots on), the initramfs gives up.
    assert ("The guest kernel failed while booting: Kernel panic" in up.stderr
            or "The guest kernel failed while booting: Gave up waiting for root" in up.stderr)
    assert "Last lines of the serial log" in up.stderr
    assert not qemu_pids(str(other_lab.lab_dir))


def test_guest_that_never_gets_ready_times_out(other_lab: Cli) -> None:
    up = other_lab("lab.up", env={"FENTRY_LAB_BOOT_TIMEOUT": "2"}, timeout=300)
    assert up.returncode == 2, up.stderr
    assert "did not become ready within 2 s" in up.stderr
    assert not qemu_pids(str(other_lab.lab_dir))
    assert other_lab("lab.status", "--name", other_lab.name).stdout.split()[-1] == "down"


def test_ctrl_c_during_up_stops_qemu(other_lab: Cli) -> None:
    proc = subprocess.Popen([INVOKE, "lab.up"], cwd=REPO, env=other_lab.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not qemu_pids(str(other_lab.lab_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until qemu runs, then interrupt the boot wait
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not qemu_pids(str(other_lab.lab_dir))
    assert other_lab("lab.status", "--name", other_lab.name).stdout.split()[-1] == "down"


def test_taken_port_is_replaced(other_lab: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from lab.vm import qemu, qemu_process

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    ports = iter([taken])
    real_free_port = qemu_process.free_port
    monkeypatch.setattr(qemu, "free_port", lambda: next(ports, None) or real_free_port())
    backend = qemu.QemuBackend(load_settings(flags={"name": other_lab.name}))
    try:
        target = backend.up().target
        assert target.port != taken
    finally:
        holder.close()


# --------------------------------------------------------------------------- hard edges
# One more lab, shared by the cases below that break it on purpose (in file order; each
# also works alone). Its teardown destroys it and checks that no qemu is left.


@pytest.fixture(scope="module")
def fragile(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli("lab.down", timeout=120)  # one VM at a time on this shared machine
    tool = Cli(f"vm-fragile-{os.getpid()}", tmp_path_factory.mktemp("fragile"))
    try:
        yield tool
    finally:
        destroy_and_check(tool)


def status_of(cli: Cli) -> tuple[str, str]:
    """(state column, whole output) of `lab.status --name`."""
    out = cli("lab.status", "--name", cli.name)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[1]
    return row.split(None, 8)[-1].strip(), out.stdout


def test_two_concurrent_ups_boot_once(fragile: Cli) -> None:
    assert fragile("lab.destroy", timeout=120).returncode == 0
    procs = [subprocess.Popen([INVOKE, "lab.up"], cwd=REPO, env=fragile.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    errs = [err for _, err in outputs]
    assert [proc.returncode for proc in procs] == [0, 0], errs
    assert all("Traceback" not in err for err in errs)
    assert sum("is up in" in err for err in errs) == 1, errs  # booted once ...
    assert sum("already up" in err for err in errs) == 1, errs  # ... the other one waited
    assert any("waiting for it to finish" in err for err in errs), errs
    assert len(qemu_pids(str(fragile.lab_dir))) == 1


def test_guest_cannot_reach_host_loopback(fragile: Cli) -> None:
    import socket

    assert fragile("lab.up").returncode == 0
    with socket.socket() as service:  # a service on the host's 127.0.0.1
        service.bind(("127.0.0.1", 0))
        service.listen()
        service.settimeout(0.5)
        port = service.getsockname()[1]
        probe = ("import socket,sys\n"
                 "try:\n"
                 f"    socket.create_connection(('10.0.2.2', {port}), timeout=5)\n"
                 "except OSError as e:\n"
                 "    sys.exit(f'blocked: {e}')\n"
                 "print('reached')\n")
        run = fragile("lab.ssh", "-c", f"python3 -c \"{probe}\"")
        assert "reached" not in run.stdout and "blocked" in run.stderr, run
        with pytest.raises(TimeoutError):
            service.accept()
    assert fragile("lab.ssh", "-c", "true").returncode == 0  # the forward to sshd works


def test_panic_keeps_the_serial_log(fragile: Cli) -> None:
    assert fragile("lab.up").returncode == 0
    crash = fragile("lab.ssh", "-c", "echo c > /proc/sysrq-trigger", timeout=300)
    assert crash.returncode == 2, crash.stderr  # the lab failed, one message
    deadline = time.monotonic() + 60
    while qemu_pids(str(fragile.lab_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)  # panic=-1 and -no-reboot: qemu exits
    assert status_of(fragile)[0] == "dead"
    up = fragile("lab.up", timeout=600)
    assert up.returncode == 0 and "died" in up.stderr, up.stderr
    kept = (fragile.lab_dir / "serial.log.1").read_text(errors="replace")
    assert "Kernel panic" in kept and "sysrq" in kept.lower()

    from lab.vm.boot import explain_failure

    assert explain_failure(fragile.lab_dir / "serial.log.1").startswith(
        "The guest kernel failed: Kernel panic")


def test_stopped_sshd_is_unresponsive(fragile: Cli) -> None:
    assert fragile("lab.up").returncode == 0
    fragile("lab.ssh", "-c", "systemctl stop ssh.socket 2>/dev/null; systemctl stop ssh")
    state, out = status_of(fragile)
    assert state == "unresponsive", out
    assert f"invoke lab.destroy --name {fragile.name} && invoke lab.up" in out
    up = fragile("lab.up")
    assert up.returncode == 2 and "is not usable" in up.stderr, up.stderr
    run = fragile("lab.ssh", "-c", "true")
    assert run.returncode == 2 and "Could not connect by SSH" in run.stderr, run.stderr


def test_corrupt_state_is_reported_and_its_qemu_stopped(fragile: Cli) -> None:
    if not qemu_pids(str(fragile.lab_dir)):
        assert fragile("lab.up").returncode == 0
    (fragile.lab_dir / "state.json").write_text("{garbage")
    state, out = status_of(fragile)
    assert state == "corrupt" and "lab.destroy" in out, out
    everyone = fragile("lab.status")  # all labs: still a table
    assert everyone.returncode == 0 and fragile.name in everyone.stdout
    up = fragile("lab.up")
    assert up.returncode == 2 and "unreadable" in up.stderr, up.stderr
    assert fragile("lab.destroy", timeout=120).returncode == 0
    assert not qemu_pids(str(fragile.lab_dir))  # found by its directory, stopped
