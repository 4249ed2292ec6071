"""Unit tests for lab.vm.accel: when KVM is usable, and which accelerator is chosen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.vm.accel import Accel, choose_accel, cpu_virt_flags, kvm_problem

INTEL = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Some CPU
flags\t\t: fpu vme de pse tsc msr pae vmx sse sse2 ssse3
vmx flags\t: vnmi preemption_timer invvpid ept_x_only
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme de pse tsc msr pae vmx sse sse2 ssse3
"""
AMD = "processor\t: 0\nflags\t\t: fpu vme svm sse sse2 lahf_lm\n"
NO_VIRT = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae sse sse2 hypervisor\n"


def host_has_virt_flags() -> bool:
    try:
        return bool(cpu_virt_flags(Path("/proc/cpuinfo").read_text()))
    except OSError:
        return True  # cannot tell: treat as "might have them" and skip


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """A stand-in for /dev/kvm: an ordinary file this user can read and write."""
    path = tmp_path / "kvm"
    path.write_bytes(b"")
    path.chmod(0o600)
    return path


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- cpu flags


def test_cpu_virt_flags() -> None:
    assert cpu_virt_flags(INTEL) == {"vmx"}
    assert cpu_virt_flags(AMD) == {"svm"}
    assert cpu_virt_flags(NO_VIRT) == set()
    assert cpu_virt_flags("") == set()
    assert cpu_virt_flags("processor\t: 0\n") == set()


def test_vmx_flags_line_alone_is_not_a_flags_line() -> None:
    # "vmx flags" lists VMX features; only the "flags" line says whether vmx is there.
    text = "vmx flags\t: vnmi ept\nflags\t\t: fpu sse\n"
    assert cpu_virt_flags(text) == set()


def test_flag_names_must_match_whole_words() -> None:
    assert cpu_virt_flags("flags\t\t: vmxnet svm2 xsvm\n") == set()


# --------------------------------------------------------------------------- kvm_problem


def test_usable_with_vmx(tmp_path: Path, dev: Path) -> None:
    assert kvm_problem(dev, cpuinfo(tmp_path, INTEL)) is None


def test_usable_with_svm(tmp_path: Path, dev: Path) -> None:
    assert kvm_problem(dev, cpuinfo(tmp_path, AMD)) is None


def test_missing_device(tmp_path: Path) -> None:
    missing = tmp_path / "no-kvm"
    problem = kvm_problem(missing, cpuinfo(tmp_path, INTEL))
    assert problem == f"{missing} does not exist"


def test_no_hardware_virtualisation(tmp_path: Path, dev: Path) -> None:
    problem = kvm_problem(dev, cpuinfo(tmp_path, NO_VIRT))
    assert problem is not None
    assert "vmx" in problem
    assert "svm" in problem
    assert str(dev) in problem


def test_cpuinfo_without_flags_line(tmp_path: Path, dev: Path) -> None:
    problem = kvm_problem(dev, cpuinfo(tmp_path, "processor\t: 0\n"))
    assert problem is not None
    assert "neither vmx nor svm" in problem


def test_unreadable_cpuinfo(tmp_path: Path, dev: Path) -> None:
    missing = tmp_path / "no-cpuinfo"
    assert kvm_problem(dev, missing) == f"{missing} is unreadable"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file: permissions cannot "
                                               "make the device unusable")
def test_device_without_read_write_permission(tmp_path: Path, dev: Path) -> None:
    dev.chmod(0o400)
    problem = kvm_problem(dev, cpuinfo(tmp_path, INTEL))
    assert problem is not None
    assert "not readable and writable" in problem
    assert "group kvm" in problem


def test_device_check_comes_before_cpu_flags(tmp_path: Path) -> None:
    missing = tmp_path / "no-kvm"
    problem = kvm_problem(missing, cpuinfo(tmp_path, NO_VIRT))
    assert problem is not None
    assert "does not exist" in problem


# --------------------------------------------------------------------------- choose_accel


def test_tcg_requested() -> None:
    for problem in (None, "anything"):
        accel = choose_accel("tcg", problem=problem, probe=False)
        assert accel == Accel("tcg", "requested")


def test_kvm_requested_and_usable() -> None:
    accel = choose_accel("kvm", problem=None, probe=False)
    assert accel == Accel("kvm", "requested")
    assert accel.qemu_args == ["-accel", "kvm", "-cpu", "host"]
    assert accel.slowdown == 1.0


def test_kvm_requested_but_unusable_names_the_problem() -> None:
    problem = "the CPU advertises neither vmx nor svm"
    with pytest.raises(LabError) as info:
        choose_accel("kvm", problem=problem, probe=False)
    text = str(info.value)
    assert problem in text
    assert "--accel kvm" in text
    assert "--accel tcg" in text


def test_auto_with_a_problem_falls_back_to_tcg() -> None:
    accel = choose_accel("auto", problem="/dev/kvm does not exist", probe=False)
    assert accel.name == "tcg"
    assert accel.reason == "/dev/kvm does not exist"
    assert accel.qemu_args == ["-accel", "tcg,thread=multi", "-cpu", "max"]
    assert accel.slowdown > 1.0


def test_auto_without_a_problem_picks_kvm() -> None:
    accel = choose_accel("auto", problem=None, probe=False)
    assert accel.name == "kvm"


def test_unknown_accelerator() -> None:
    with pytest.raises(LabError, match="Unknown accelerator 'hvf'"):
        choose_accel("hvf", problem=None, probe=False)


# --------------------------------------------------------------------------- this machine


@pytest.mark.skipif(host_has_virt_flags(),
                    reason="this host's CPU advertises vmx or svm (or cpuinfo is unreadable)")
def test_this_host_without_virt_flags_gets_tcg() -> None:
    problem = kvm_problem()
    assert problem is not None
    accel = choose_accel("auto")
    assert accel.name == "tcg"
    assert accel.reason == problem
    with pytest.raises(LabError, match=r"KVM is unusable"):
        choose_accel("kvm")
