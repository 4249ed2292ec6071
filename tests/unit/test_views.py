"""Unit tests for lab.views: table layout and the texts shown for empty lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lab.config import Settings
from lab.image.build import Image
from lab.results.check import Check
from lab.run.runner import Outcome
from lab.ssh import SshTarget
from lab.views import (
    images_table,
    lab_names,
    outcome_text,
    scenario_rows,
    scenarios_json,
    scenarios_table,
    ssh_command,
    ssh_config,
    status_json,
    status_table,
    table,
)
from lab.vm.base import LabStatus
from tests.helpers import REPO

# --------------------------------------------------------------------------- table


def test_table_aligns_columns() -> None:
    text = table(("NAME", "N", "NOTE"), [("a", 1, "short"), ("longer-name", 12345, "x")])
    assert text.splitlines() == [
        "NAME         N      NOTE",
        "a            1      short",
        "longer-name  12345  x",
    ]


def test_table_header_can_be_the_widest() -> None:
    text = table(("A-LONG-HEADER", "B"), [("x", "y")])
    assert text.splitlines() == ["A-LONG-HEADER  B", "x              y"]


def test_table_strips_trailing_spaces() -> None:
    text = table(("A", "B"), [("x", ""), ("y", "long value")])
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert lines[1] == "x"
    assert lines[2] == "y  long value"


def test_table_without_rows_is_the_header() -> None:
    assert table(("A", "BB"), []) == "A  BB"


def test_table_columns_start_at_the_same_place() -> None:
    text = table(("X", "Y", "Z"), [("1", "22", "333"), ("4444", "5", "6")])
    assert text.splitlines() == ["X     Y   Z", "1     22  333", "4444  5   6"]


# --------------------------------------------------------------------------- images


def test_images_table_empty() -> None:
    assert images_table([]) == "no cached images (build one with `invoke image.build`)"


def test_images_table_rows(tmp_path: Path) -> None:
    image = Image(tmp_path / "trixie-0123456789ab", {
        "release": "trixie",
        "kernel_release": "6.12.117+deb13-cloud-amd64",
        "build_id": "0123456789abcdef" * 2,
        "built_at": "2025-01-02T03:04:05+00:00",
        "artefacts": {"disk.qcow2": {"sha256": "0" * 64, "size": 300 * 1024**2}},
    })
    lines = images_table([image]).splitlines()
    assert lines[0].split() == ["IMAGE", "RELEASE", "KERNEL", "BUILD", "ID", "BUILT", "DISK"]
    assert lines[1].split() == ["trixie-0123456789ab", "trixie", "6.12.117+deb13-cloud-amd64",
                                "0123456789ab", "2025-01-02T03:04:05+00:00", "300", "MiB"]


def test_images_table_without_artefacts(tmp_path: Path) -> None:
    image = Image(tmp_path / "x", {"release": "bookworm", "kernel_release": "6.1.0",
                                   "build_id": "ab"})
    row = images_table([image]).splitlines()[1]
    assert row.endswith("0 MiB")


# --------------------------------------------------------------------------- labs


def status(name: str, state: str = "up", pid: int = 4242, uptime_s: float = 3725.0
           ) -> LabStatus:
    return LabStatus(name=name, backend="qemu", state=state, release="trixie",
                     kernel_release="6.12.117+deb13-cloud-amd64", accel="tcg", pid=pid,
                     ssh_port=40022 if pid else 0, uptime_s=uptime_s)


def test_status_table_empty() -> None:
    assert status_table([]) == "no labs (start one with `invoke lab.up`)"


def test_status_table_rows() -> None:
    text = status_table([status("default"), status("second", "down", pid=0, uptime_s=0),
                         status("quick", uptime_s=65)])
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "BACKEND", "RELEASE", "KERNEL", "ACCEL", "PID", "SSH",
                                "PORT", "UPTIME", "STATE"]
    assert lines[1].split() == ["default", "qemu", "trixie", "6.12.117+deb13-cloud-amd64",
                                "tcg", "4242", "40022", "1h02m", "up"]
    assert lines[2].split() == ["second", "qemu", "trixie", "6.12.117+deb13-cloud-amd64",
                                "tcg", "-", "-", "-", "down"]
    assert lines[3].split()[-2:] == ["1m05s", "up"]
    # The first column is padded to the widest name, "default".
    assert lines[0].index("BACKEND") == len("default") + 2
    assert {line.index("qemu") for line in lines[1:]} == {len("default") + 2}


def test_lab_names(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert lab_names(settings) == []  # no labs directory at all
    for name, with_state in (("zeta", True), ("alpha", True), ("half-made", False)):
        directory = settings.labs_dir / name
        directory.mkdir(parents=True)
        if with_state:
            (directory / "state.json").write_text("{}")
    assert lab_names(settings) == ["alpha", "zeta"]


# --------------------------------------------------------------------------- scenarios


def test_scenarios_table_shows_valid_and_invalid(tmp_path: Path) -> None:
    shutil.copy(REPO / "scenarios" / "acl-basic.yaml", tmp_path / "acl-basic.yaml")
    (tmp_path / "broken.yaml").write_text("name: broken\n")
    lines = scenarios_table(scenario_rows([tmp_path])).splitlines()
    assert lines[0].split() == ["SCENARIO", "FUNCTIONS", "DESCRIPTION"]
    assert lines[1].startswith("acl-basic")
    assert "do_set_acl" in lines[1]
    assert lines[2].startswith("broken")
    assert "INVALID: broken.yaml" in lines[2]


def test_scenarios_table_of_an_empty_directory(tmp_path: Path) -> None:
    assert scenario_rows([tmp_path]) == []
    assert scenarios_table([]) == "no scenarios (put NAME.yaml files in ./scenarios)"


def test_the_first_directory_wins_a_name(tmp_path: Path) -> None:
    mine, shipped = tmp_path / "mine", tmp_path / "shipped"
    mine.mkdir()
    shipped.mkdir()
    (mine / "acl-basic.yaml").write_text("name: acl-basic\n")  # invalid: it is mine
    shutil.copy(REPO / "scenarios" / "acl-basic.yaml", shipped / "acl-basic.yaml")
    shutil.copy(REPO / "scenarios" / "acl-remove.yaml", shipped / "acl-remove.yaml")
    rows = scenario_rows([mine, shipped])
    assert [(r["name"], r["valid"]) for r in rows] == [("acl-basic", False),
                                                       ("acl-remove", True)]
    assert json.loads(scenarios_json(rows))[0]["path"] == str(mine / "acl-basic.yaml")


def test_ssh_command_and_config_pin_the_host_key(tmp_path: Path) -> None:
    target = SshTarget("127.0.0.1", 2222, "root", tmp_path / "id key", "ssh-ed25519", "AAAA")
    known = tmp_path / "known_hosts"
    command = ssh_command(target, known)
    assert f"UserKnownHostsFile={known}" in command
    assert "StrictHostKeyChecking=yes" in command
    assert f"'{tmp_path / 'id key'}'" in command  # quoted for copy-paste
    block = ssh_config("two", target, known)
    assert block.splitlines()[0] == "Host fentry-lab-two"
    assert "    StrictHostKeyChecking yes" in block.splitlines()
    assert f'    IdentityFile "{tmp_path / "id key"}"' in block.splitlines()
    assert "    Port 2222" in block.splitlines()


def test_status_json() -> None:
    status = LabStatus("a", "qemu", "up", "trixie", "6.12", "tcg", 10, 2222, 5.0)
    assert json.loads(status_json([status]))[0]["ssh_port"] == 2222


# --------------------------------------------------------------------------- outcome


def test_outcome_text(tmp_path: Path) -> None:
    checks = [Check("step", "step 'a' exit status", "exit 0", "exit 0", True),
              Check("trace", "trace line 'x'", "a line", "none in 0 lines", False)]
    outcome = Outcome(status="failed", bundle=tmp_path / "run", checks=checks,
                      error="probe did not attach", exit_code=1,
                      phases={"preflight": 1.25, "steps": 3.0})
    assert outcome_text("acl-basic", outcome).splitlines() == [
        "[ok] step 'a' exit status: expected exit 0; saw exit 0",
        "[FAILED] trace line 'x': expected a line; saw none in 0 lines",
        "error: probe did not attach",
        "scenario acl-basic: FAILED (preflight 1.2s, steps 3.0s)",
        f"results: {tmp_path / 'run'}",
    ]
