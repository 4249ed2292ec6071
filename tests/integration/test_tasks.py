"""Tests of the tasks (lab/cli): task bodies called with an invoke context, and the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.context import Context, MockContext
from invoke.exceptions import Exit

from lab.cli import common, image, labs, scenario
from lab.errors import LabError
from lab.vm.accel import cpu_virt_flags
from tests.helpers import INVOKE, REPO


def host_has_virt_flags() -> bool:
    try:
        return bool(cpu_virt_flags(Path("/proc/cpuinfo").read_text()))
    except OSError:
        return True


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No FENTRY_LAB_* from the caller; the cache in a temporary directory."""
    for key in list(os.environ):
        if key.startswith("FENTRY_LAB_"):
            monkeypatch.delenv(key)
    home = tmp_path / "lab-home"
    monkeypatch.setenv("FENTRY_LAB_HOME", str(home))
    return home


def bad_scenario(tmp_path: Path) -> Path:
    """acl-basic's text under another name: line 3 names it acl-basic, not bad."""
    path = tmp_path / "bad.yaml"
    shutil.copy(REPO / "scenarios" / "acl-basic.yaml", path)
    assert path.read_text().splitlines()[2] == "name: acl-basic"
    return path


# --------------------------------------------------------------------------- task bodies


def test_settings_from_reads_the_lab_section(tmp_path: Path) -> None:
    c = Context()
    c.config.update({"lab": {"cpus": 3, "name": "from-config"}})
    settings = common.settings_from(c, cpus=4, name=None)
    assert settings.cpus == 4
    assert settings.name == "from-config"
    assert settings.home == tmp_path / "lab-home"


def test_scenario_validate_bad_file_exits_1(tmp_path: Path) -> None:
    path = bad_scenario(tmp_path)
    with pytest.raises(Exit) as info:
        scenario.validate(MockContext(), str(path))
    assert info.value.code == 1
    assert info.value.message == (
        "fentry-lab: error: bad.yaml:3: name: name 'acl-basic' must equal the file name "
        "stem 'bad'")


def test_scenario_validate_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    text = (REPO / "scenarios" / "acl-basic.yaml").read_text()
    text = text.replace("name: acl-basic", "name: typo").replace("expect_exit: 0",
                                                                 "expect_exit: zero")
    path.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "expect_exit: zero" in s)
    with pytest.raises(Exit) as info:
        scenario.validate(MockContext(), str(path))
    assert info.value.code == 1
    message = str(info.value.message)
    assert message.startswith(f"fentry-lab: error: typo.yaml:{line}: steps[0].expect_exit: ")


def test_scenario_validate_good_file(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "acl-basic.yaml"
    shutil.copy(REPO / "scenarios" / "acl-basic.yaml", path)
    scenario.validate(MockContext(), str(path))
    assert capsys.readouterr().out == f"{path}: valid\n"


def test_scenario_validate_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    scenario.validate(MockContext(), "acl-basic")
    assert capsys.readouterr().out == f"{REPO / 'scenarios' / 'acl-basic.yaml'}: valid\n"


def test_scenario_validate_unknown_name() -> None:
    with pytest.raises(Exit) as info:
        scenario.validate(MockContext(), "no-such-scenario")
    assert info.value.code == 1
    assert "unknown scenario 'no-such-scenario'" in str(info.value.message)
    assert "acl-basic" in str(info.value.message)


def test_word_form_needs_a_name() -> None:
    with pytest.raises(Exit) as info:
        scenario.run(MockContext(), "validate", "")
    assert info.value.code == 1
    assert "needs a scenario name" in str(info.value.message)


def test_word_form_validate(tmp_path: Path) -> None:
    with pytest.raises(Exit) as info:
        scenario.run(MockContext(), "validate", str(bad_scenario(tmp_path)))
    assert info.value.code == 1
    assert "bad.yaml:3: name:" in str(info.value.message)


def test_word_form_refuses_run_flags_on_other_verbs() -> None:
    with pytest.raises(Exit) as info:
        scenario.run(MockContext(), "validate", "acl-basic", name="x")
    assert info.value.code == 1
    assert "takes no --name" in str(info.value.message)


def test_word_form_list(capsys: pytest.CaptureFixture[str]) -> None:
    scenario.run(MockContext(), "list")
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["SCENARIO", "FUNCTIONS", "DESCRIPTION"]
    assert any(line.startswith("acl-basic ") for line in out.splitlines())


def test_scenario_show(capsys: pytest.CaptureFixture[str]) -> None:
    scenario.show(MockContext(), "acl-basic")
    assert capsys.readouterr().out == (REPO / "scenarios" / "acl-basic.yaml").read_text()


def test_lab_error_becomes_exit_with_its_code() -> None:
    with pytest.raises(Exit) as info, common.friendly_errors():
        raise LabError("something went wrong", code=2)
    assert info.value.code == 2
    assert info.value.message == "fentry-lab: error: something went wrong"


def test_bad_setting_is_an_exit_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FENTRY_LAB_CPUS", "many")
    with pytest.raises(Exit) as info:
        scenario.list_(MockContext())
    assert info.value.code == 1
    assert "which is not a number" in str(info.value.message)


def test_lab_status_without_labs(capsys: pytest.CaptureFixture[str]) -> None:
    labs.status(MockContext())
    assert capsys.readouterr().out == "no labs (start one with `invoke lab.up`)\n"


def test_image_list_without_images(capsys: pytest.CaptureFixture[str]) -> None:
    image.list_(MockContext())
    assert capsys.readouterr().out == (
        "no cached images (build one with `invoke image.build`)\n")


# --------------------------------------------------------------------------- the real CLI


def invoke_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the project's invoke from the checkout, with the test's environment."""
    assert Path(INVOKE).exists(), f"no invoke next to {sys.executable}"
    return subprocess.run([str(INVOKE), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), check=False)


def test_cli_lists_the_tasks() -> None:
    proc = invoke_cli("--list")
    assert proc.returncode == 0, proc.stderr
    for name in ("image.build", "lab.up", "lab.down", "scenario.run", "scenario.validate"):
        assert name in proc.stdout


def test_cli_scenario_validate_by_word() -> None:
    proc = invoke_cli("scenario", "validate", "acl-basic")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("acl-basic.yaml: valid")


def test_cli_scenario_list() -> None:
    proc = invoke_cli("scenario", "list")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert "acl-basic" in names


def test_cli_validate_missing_file_has_no_traceback() -> None:
    proc = invoke_cli("scenario.validate", "/nonexistent/x.yaml")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stdout
    assert proc.stderr.startswith("fentry-lab: error: ")
    assert "/nonexistent/x.yaml" in proc.stderr


def test_cli_validate_bad_file(tmp_path: Path) -> None:
    proc = invoke_cli("scenario", "validate", str(bad_scenario(tmp_path)))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "bad.yaml:3: name: name 'acl-basic' must equal" in proc.stderr


def test_cli_unknown_word_is_a_parse_error_not_a_traceback() -> None:
    proc = invoke_cli("scenario", "bogus", "acl-basic")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "No idea what 'acl-basic' is!" in proc.stderr


def qemu_processes_under(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline and b"qemu" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(host_has_virt_flags(),
                    reason="this host's CPU advertises vmx or svm (or cpuinfo is unreadable)")
def test_cli_lab_up_with_kvm_fails_without_starting_a_vm(
        isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Safety net: should lab.up try to build an image, the mirror refuses at once
    # instead of mmdebstrap downloading Debian.
    monkeypatch.setenv("FENTRY_LAB_MIRROR", "http://127.0.0.1:9/debian")
    proc = invoke_cli("lab.up", "--accel", "kvm", "--name", "pytest-nokvm", timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "vmx" in proc.stderr and "svm" in proc.stderr, proc.stderr
    state = isolated_env / "labs" / "pytest-nokvm" / "state.json"
    assert not state.exists() or json.loads(state.read_text()).get("pid") == 0
    assert qemu_processes_under(isolated_env) == []
    assert not list((isolated_env / "images").glob("*/disk.qcow2"))
