"""Unit tests for lab.config: defaults, precedence, coercion and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lab.config import (
    REPO_ROOT,
    SHIPPED,
    Settings,
    check_name,
    default_home,
    from_environment,
    load_settings,
)
from lab.errors import LabError, UsageError
from tests.helpers import REPO

# --------------------------------------------------------------------------- defaults


def test_repo_root_is_the_checkout() -> None:
    assert REPO_ROOT == REPO


def test_default_home_follows_xdg_cache_home(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_home() == tmp_path / "cache" / "fentry-lab"
    assert Settings().home == tmp_path / "cache" / "fentry-lab"


def test_default_home_without_xdg_is_under_home(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".cache" / "fentry-lab"


def test_empty_xdg_cache_home_is_ignored(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".cache" / "fentry-lab"


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    s = load_settings(environ={})
    assert s.home == tmp_path / "fentry-lab"
    assert s.release == "trixie"
    assert s.mirror == ""
    assert s.name == "default"
    assert s.backend == "qemu"
    assert s.accel == "auto"
    assert s.cpus == 2
    assert s.memory == 2048
    assert s.boot_timeout == 0.0
    assert s.results == REPO / "results"
    assert s.images_dir == REPO / "images"
    assert s.scenarios_dir == REPO / "scenarios"
    assert s.bpf_dir == REPO / "bpf"


def test_cache_directories_derive_from_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.images_cache == tmp_path / "images"
    assert s.keys_dir == tmp_path / "keys"
    assert s.labs_dir == tmp_path / "labs"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- precedence


def test_precedence_invoke_config_then_env_then_flags() -> None:
    s = load_settings(
        invoke_config={"cpus": 3, "memory": 1024, "release": "bookworm", "name": "cfg"},
        environ={"FENTRY_LAB_CPUS": "4", "FENTRY_LAB_RELEASE": "bullseye"},
        flags={"cpus": 5},
    )
    assert s.cpus == 5  # flag beats env beats config
    assert s.release == "bullseye"  # env beats config
    assert s.memory == 1024  # only config sets it
    assert s.name == "cfg"


def test_none_flags_are_ignored() -> None:
    s = load_settings(
        invoke_config={"name": "from-config"},
        environ={"FENTRY_LAB_CPUS": "4"},
        flags={"cpus": None, "name": None, "accel": None, "memory": 512},
    )
    assert s.cpus == 4
    assert s.name == "from-config"
    assert s.accel == "auto"
    assert s.memory == 512


def test_none_in_invoke_config_is_ignored() -> None:
    assert load_settings(invoke_config={"release": None}, environ={}).release == "trixie"


def test_load_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FENTRY_LAB_NAME", "from-env")
    monkeypatch.setenv("FENTRY_LAB_MEMORY", "4096")
    s = load_settings()
    assert s.name == "from-env"
    assert s.memory == 4096


def test_env_values_are_coerced(tmp_path: Path) -> None:
    s = load_settings(environ={
        "FENTRY_LAB_HOME": str(tmp_path / "home"),
        "FENTRY_LAB_BOOT_TIMEOUT": "90.5",
        "FENTRY_LAB_CPUS": "1",
        "FENTRY_LAB_MIRROR": "http://deb.example/debian",
    })
    assert s.home == tmp_path / "home"
    assert isinstance(s.home, Path)
    assert s.boot_timeout == 90.5
    assert isinstance(s.boot_timeout, float)
    assert s.cpus == 1
    assert s.mirror == "http://deb.example/debian"
    assert s.images_cache == tmp_path / "home" / "images"


def test_path_settings_expand_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = load_settings(environ={"FENTRY_LAB_HOME": "~/lab"})
    assert s.home == tmp_path / "lab"


def test_dashed_keys_from_invoke_config() -> None:
    s = load_settings(invoke_config={"boot-timeout": "30"}, environ={})
    assert s.boot_timeout == 30.0


def test_with_overrides_returns_a_copy() -> None:
    base = Settings()
    changed = base.with_overrides({"name": "x", "cpus": "3"})
    assert (changed.name, changed.cpus) == ("x", 3)
    assert (base.name, base.cpus) == ("default", 2)


def test_non_string_values_for_string_settings_become_strings() -> None:
    assert load_settings(invoke_config={"name": 7}, environ={}).name == "7"


# --------------------------------------------------------------------------- errors


def test_unknown_setting_names_the_known_ones() -> None:
    with pytest.raises(LabError) as info:
        load_settings(invoke_config={"colour": "red"}, environ={})
    text = str(info.value)
    assert "Unknown setting 'colour'" in text
    assert "Known settings:" in text
    for known in ("accel", "cpus", "home", "memory", "release"):
        assert known in text
    assert info.value.code == 1


def test_unknown_flag_is_an_error_too() -> None:
    with pytest.raises(LabError, match="Unknown setting 'speed'"):
        load_settings(flags={"speed": 3}, environ={})


@pytest.mark.parametrize(("env", "key", "value"), [
    ("FENTRY_LAB_CPUS", "cpus", "two"),
    ("FENTRY_LAB_MEMORY", "memory", "2G"),
    ("FENTRY_LAB_BOOT_TIMEOUT", "boot_timeout", "soon"),
])
def test_bad_number_message(env: str, key: str, value: str) -> None:
    with pytest.raises(LabError) as info:
        load_settings(environ={env: value})
    assert str(info.value) == (
        f"Setting {key!r} has the value {value!r}, which is not a number.")


def test_bad_number_from_a_flag() -> None:
    with pytest.raises(LabError, match="which is not a number"):
        load_settings(flags={"memory": "lots"}, environ={})


def test_unknown_fentry_lab_env_names_are_ignored() -> None:
    environ = {
        "FENTRY_LAB_COLOUR": "red",  # not a setting
        "FENTRY_LAB_": "empty name",
        "FENTRY_LAB_IMAGES_CACHE": "/nowhere",  # a derived property, not a field
        "FENTRY_LAB_KEYS_DIR": "/nowhere",
        "FENTRY_LABX_NAME": "other prefix",
        "LAB_NAME": "no prefix",
        "FENTRY_LAB_NAME": "mine",
    }
    assert from_environment(environ) == {"name": "mine"}
    s = load_settings(environ=environ)
    assert s.name == "mine"
    assert s.images_cache == s.home / "images"


def test_from_environment_lowercases_names() -> None:
    assert from_environment({"FENTRY_LAB_BOOT_TIMEOUT": "5"}) == {"boot_timeout": "5"}


@pytest.mark.parametrize("accel", ["auto", "kvm", "tcg"])
def test_valid_accelerators(accel: str) -> None:
    assert load_settings(flags={"accel": accel}, environ={}).accel == accel


@pytest.mark.parametrize("accel", ["hvf", "KVM", "", "whpx"])
def test_invalid_accelerator(accel: str) -> None:
    with pytest.raises(LabError) as info:
        load_settings(flags={"accel": accel}, environ={})
    assert str(info.value) == f"Unknown accelerator {accel!r}: use auto, kvm or tcg."


def test_invalid_accelerator_from_env() -> None:
    with pytest.raises(LabError, match="Unknown accelerator 'xen'"):
        load_settings(environ={"FENTRY_LAB_ACCEL": "xen"})


def test_only_the_final_accelerator_is_validated() -> None:
    s = load_settings(invoke_config={"accel": "hvf"}, environ={}, flags={"accel": "tcg"})
    assert s.accel == "tcg"


@pytest.mark.parametrize("backend", ["qemu", "vagrant"])
def test_valid_backends(backend: str) -> None:
    assert load_settings(flags={"backend": backend}, environ={}).backend == backend


def test_invalid_backend() -> None:
    with pytest.raises(LabError) as info:
        load_settings(environ={"FENTRY_LAB_BACKEND": "docker"})
    assert str(info.value) == "Unknown backend 'docker': use qemu or vagrant."


# --------------------------------------------------------------------------- validation


def test_results_default_to_the_current_directory(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s.results == tmp_path / "results"
    assert s.scenario_dirs == (tmp_path / "scenarios", SHIPPED / "scenarios")
    assert s.bpf_dirs == (tmp_path / "bpf", SHIPPED / "bpf")


def test_the_clone_is_the_shipped_root() -> None:
    assert SHIPPED == REPO


def test_search_paths_do_not_repeat_the_shipped_directory() -> None:
    s = load_settings(environ={}, flags={"scenarios": str(REPO / "scenarios")})
    assert s.scenario_dirs == (REPO / "scenarios",)


@pytest.mark.parametrize("name", ["default", "ci-1", "a", "A.b_c-9", "x" * 63])
def test_good_lab_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a b/c", "x" * 64, "a,b", "-x",
                                  ".hidden", "a/b", "é", "a\0b", "a\nb"])
def test_bad_lab_names(name: str) -> None:
    with pytest.raises(UsageError, match="is not allowed: use 1-63 letters"):
        check_name(name)


@pytest.mark.parametrize(("values", "message"), [
    ({"FENTRY_LAB_CPUS": "0"}, "Setting 'cpus' is 0: use 1 to"),
    ({"FENTRY_LAB_CPUS": "-1"}, "Setting 'cpus' is -1: use 1 to"),
    ({"FENTRY_LAB_CPUS": "1000"}, "Setting 'cpus' is 1000: use 1 to"),
    ({"FENTRY_LAB_MEMORY": "1"}, "Setting 'memory' is 1 MiB: use 256 to"),
    ({"FENTRY_LAB_MEMORY": "99999999"}, "Setting 'memory' is 99999999 MiB"),
    ({"FENTRY_LAB_BOOT_TIMEOUT": "-5"}, "Setting 'boot_timeout' is -5 s"),
    ({"FENTRY_LAB_BOOT_TIMEOUT": "nan"}, "which is not a number"),
    ({"FENTRY_LAB_BOOT_TIMEOUT": "1e400"}, "which is not a number"),
    ({"FENTRY_LAB_HOME": ""}, "Setting 'home' is empty"),
    ({"FENTRY_LAB_HOME": "  "}, "Setting 'home' is empty"),
    ({"FENTRY_LAB_NAME": "../x"}, "The lab name '../x' is not allowed"),
    ({"FENTRY_LAB_RELEASE": "buster"}, "Unknown release 'buster': use one of"),
    ({"FENTRY_LAB_RELEASE": "../trixie"}, "Unknown release '../trixie'"),
    ({"FENTRY_LAB_MIRROR": "ftp://x"}, "Setting 'mirror' is 'ftp://x'"),
    ({"FENTRY_LAB_MIRROR": "http://a b"}, "Setting 'mirror'"),
    ({"FENTRY_LAB_KERNEL_ARGS": "a\nb"}, "Setting 'kernel_args' has a NUL byte or a line"),
])
def test_bad_values_are_refused_with_the_setting_named(values: dict[str, str],
                                                       message: str) -> None:
    with pytest.raises(UsageError) as info:
        load_settings(environ=values)
    assert message in str(info.value)
    assert info.value.code == 1


def test_results_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"Setting .results. is .*, which is a file"):
        load_settings(environ={"FENTRY_LAB_RESULTS": str(tmp_path / "file")})


def test_a_list_where_a_value_belongs_is_refused() -> None:
    with pytest.raises(UsageError, match="Setting 'cpus' has the value \\[1, 2\\], which is"):
        load_settings(invoke_config={"cpus": [1, 2]}, environ={})


def test_whole_numbers_only_for_integer_settings() -> None:
    with pytest.raises(UsageError, match="not a number"):
        load_settings(invoke_config={"cpus": 1.5}, environ={})
    assert load_settings(invoke_config={"cpus": 1.0}, environ={}).cpus == 1
