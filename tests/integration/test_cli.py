"""The CLI's traps, through the real `invoke` and `fentry-lab` commands (subprocesses).

Each bad input must end with exit 1 and a message naming the setting and what is allowed,
before anything starts (no lab is created, no qemu runs) and with no traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import INVOKE, REPO

FENTRY_LAB = str(Path(sys.executable).parent / "fentry-lab")
LONG = "x" * 300

# argv (after the command), extra environment, message fragment, exit code
TRAPS: list[tuple[list[str], dict[str, str], str, int]] = [
    (["lab.destroy", "--name", ".."], {}, "The lab name '..' is not allowed: use 1-63", 1),
    (["lab.destroy", "--name", ""], {}, "The lab name '' is not allowed", 1),
    (["lab.up", "--name", "../x"], {}, "The lab name '../x' is not allowed", 1),
    (["lab.status", "--name", "a b/c"], {}, "The lab name 'a b/c' is not allowed", 1),
    (["lab.status", "--name", LONG], {}, f"The lab name '{'x' * 80}'... is not allowed", 1),
    (["lab.up", "--name", "a,b"], {}, "The lab name 'a,b' is not allowed", 1),
    (["lab.status"], {"FENTRY_LAB_NAME": "../x"}, "The lab name '../x' is not allowed", 1),
    (["lab.up", "--name", "cl-t", "--cpus", "0"], {}, "Setting 'cpus' is 0: use 1 to", 1),
    (["lab.up", "--name", "cl-t", "--cpus", "-1"], {}, "Setting 'cpus' is -1: use 1 to", 1),
    (["lab.up", "--name", "cl-t", "--cpus", "abc"], {}, "--cpus takes a whole number, not "
                                                        "'abc'", 1),
    (["lab.up", "--name", "cl-t", "--memory", "1"], {}, "Setting 'memory' is 1 MiB: use 256",
     1),
    (["lab.up", "--name", "cl-t", "--memory", "99999999"], {}, "Setting 'memory' is 99999999",
     1),
    (["lab.up", "--name", "cl-t"], {"FENTRY_LAB_BOOT_TIMEOUT": "-5"},
     "Setting 'boot_timeout' is -5 s: use 0", 1),
    (["lab.up", "--name", "cl-t", "--release", "buster"], {},
     "Unknown release 'buster': use one of", 1),
    (["lab.up", "--name", "cl-t", "--accel", "hvf"], {}, "Unknown accelerator 'hvf'", 1),
    (["matrix", "run", "acl-portable", "--jobs", "abc"], {},
     "--jobs takes a whole number, not 'abc'", 1),
    (["matrix", "run", "acl-portable", "--jobs", "-1"], {}, "--jobs is -1: use 0 or more", 1),
    (["lab.logs", "--name", "cl-t", "--lines", "-3"], {}, "--lines is -3: use 0 or more", 1),
    (["lab.status"], {"FENTRY_LAB_HOME": ""}, "Setting 'home' is empty", 1),
    (["lab.status"], {"FENTRY_LAB_CPUS": "many"}, "Setting 'cpus' has the value 'many', "
                                                  "which is not a number", 1),
    (["scenario", "validate", "acl-basic", "-a", "tcg"], {}, "No idea what '-a' is!", 1),
    (["scenario", "validate", "acl-basic", "--name", "x"], {},
     "`scenario validate` takes no --name", 1),
    (["scenario", "run"], {}, "did not receive required positional arguments", 1),
    (["scenario", "validate", "no-such"], {}, "unknown scenario 'no-such'", 1),
    (["scenario", "validate", "../etc/passwd"], {}, "scenario names may not contain", 1),
    (["scenario", "validate", LONG], {}, "bad scenario name 'xxxx", 1),
    (["scenario", "validate", LONG + ".yaml"], {}, "(305 characters)", 1),
    (["scenario", "validate", "a b"], {}, "bad scenario name 'a b'", 1),
    (["matrix", "run", "acl-portable", "--releases", "buster"], {}, "buster", 1),
]


def cli_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENTRY_LAB_")}
    env["FENTRY_LAB_HOME"] = str(tmp_path / "home")
    env["FENTRY_LAB_RESULTS"] = str(tmp_path / "results")
    # Should a case get past validation, an image build fails at once (no download).
    env["FENTRY_LAB_MIRROR"] = "http://127.0.0.1:9/debian"
    env.update(extra)
    return env


def run(command: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([command, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


@pytest.mark.parametrize("command", [INVOKE, FENTRY_LAB], ids=["invoke", "fentry-lab"])
@pytest.mark.parametrize(("argv", "extra", "message", "code"), TRAPS,
                         ids=[" ".join(t[0])[:40] + str(sorted(t[1])) for t in TRAPS])
def test_bad_input_is_refused_before_anything_starts(
        tmp_path: Path, command: str, argv: list[str], extra: dict[str, str], message: str,
        code: int) -> None:
    proc = run(command, *argv, env=cli_env(tmp_path, extra))
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "home" / "labs").exists()  # nothing was started or created


def test_short_flags_have_one_meaning(tmp_path: Path) -> None:
    # `-c` is lab.ssh's --command and nothing else: elsewhere fentry-lab refuses it (for
    # `invoke`, -c after a task is invoke's own --collection, which invoke ignores there).
    proc = run(FENTRY_LAB, "scenario", "validate", "acl-basic", "-c", "4",
               env=cli_env(tmp_path, {}))
    assert proc.returncode == 1
    assert "No idea what '-c' is!" in proc.stderr


def test_results_pointing_at_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = run(INVOKE, "scenario", "list", env=cli_env(tmp_path, {
        "FENTRY_LAB_RESULTS": str(tmp_path / "file")}))
    assert proc.returncode == 1
    assert f"Setting 'results' is {tmp_path / 'file'}, which is a file" in proc.stderr


BROKEN_CONFIGS = {
    "syntax": ("lab: {memory: 4096\n", "is not valid YAML at line 2"),
    "tab": ("lab:\n\tmemory: 4096\n", "is not valid YAML at line 2, column 1"),
    "list": ("- lab\n- memory\n", "holds a list, not a mapping of sections"),
    "lab-not-mapping": ("lab: 4096\n", "`lab:` is a number, not a mapping of settings"),
    "lab-list": ("lab: [memory, 4096]\n", "`lab:` is a list, not a mapping"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_CONFIGS))
def test_broken_invoke_yaml_with_fentry_lab(tmp_path: Path, kind: str) -> None:
    text, message = BROKEN_CONFIGS[kind]
    (tmp_path / "invoke.yaml").write_text(text)
    proc = run(FENTRY_LAB, "lab.status", cwd=tmp_path, env=cli_env(tmp_path, {}))
    assert proc.returncode == 1
    assert message in proc.stderr
    assert str(tmp_path / "invoke.yaml") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one paragraph


@pytest.mark.parametrize("kind", sorted(BROKEN_CONFIGS))
def test_broken_invoke_yaml_next_to_tasks_py(tmp_path: Path, kind: str) -> None:
    text, message = BROKEN_CONFIGS[kind]
    shutil.copy(REPO / "tasks.py", tmp_path / "tasks.py")
    (tmp_path / "invoke.yaml").write_text(text)
    proc = run(INVOKE, "--search-root", str(tmp_path), "lab.status", cwd=tmp_path,
               env=cli_env(tmp_path, {}))
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_good_invoke_yaml_is_read(tmp_path: Path) -> None:
    (tmp_path / "invoke.yaml").write_text("lab:\n  cpus: 0\n")
    proc = run(FENTRY_LAB, "lab.status", cwd=tmp_path, env=cli_env(tmp_path, {}))
    assert proc.returncode == 1
    assert "Setting 'cpus' is 0" in proc.stderr


@pytest.mark.parametrize("args", [["scenario", "list"], ["--list"]], ids=" ".join)
@pytest.mark.parametrize("command", [INVOKE, FENTRY_LAB], ids=["invoke", "fentry-lab"])
def test_closed_pipe_is_not_a_traceback(tmp_path: Path, command: str, args: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written (`| head -0`)
    proc = subprocess.run([command, *args], cwd=REPO, stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          env=cli_env(tmp_path, {}), check=False)
    os.close(write)
    assert "Traceback" not in proc.stderr
    assert "BrokenPipeError" not in proc.stderr
    assert proc.returncode == 0


def test_list_is_clean_and_the_word_forms_work(tmp_path: Path) -> None:
    for command in (INVOKE, FENTRY_LAB):
        listing = run(command, "--list", env=cli_env(tmp_path, {})).stdout
        assert "scenario.do" not in listing and "matrix.do" not in listing
        assert "scenario.run (scenario)" in listing
        assert "lab.ssh-config" in listing
        assert run(command, "scenario", "validate", "acl-basic",
                   env=cli_env(tmp_path, {})).stdout.endswith("acl-basic.yaml: valid\n")
        assert run(command, "scenario.validate", "acl-basic",
                   env=cli_env(tmp_path, {})).returncode == 0


def test_help_shows_int_kinds_and_one_short_flag() -> None:
    up = run(INVOKE, "--help", "lab.up").stdout
    assert "--cpus=INT" in up and "--memory=INT" in up
    assert " -c" not in up and " -a" not in up
    assert "-c STRING, --command=STRING" in run(INVOKE, "--help", "lab.ssh").stdout
    assert "--jobs=INT" in run(INVOKE, "--help", "matrix.run").stdout


def test_version_is_the_projects() -> None:
    proc = run(FENTRY_LAB, "--version")
    assert proc.stdout.strip() == "fentry-lab 0.1.0"


def test_completion_offers_words_names_and_releases(tmp_path: Path) -> None:
    env = cli_env(tmp_path, {})
    words = run(FENTRY_LAB, "--complete", "--", "fentry-lab", "scenario", env=env).stdout
    assert {"run", "list", "validate", "show"} <= set(words.split())
    names = run(FENTRY_LAB, "--complete", "--", "fentry-lab", "scenario", "run", "ac",
                env=env).stdout.split()
    assert "acl-basic" in names
    releases = run(FENTRY_LAB, "--complete", "--", "fentry-lab", "lab.up", "--release",
                   env=env).stdout.split()
    assert {"trixie", "bookworm", "bullseye"} <= set(releases)
    flags = run(FENTRY_LAB, "--complete", "--", "fentry-lab", "lab.up", "--c",
                env=env).stdout.split()
    assert "--cpus" in flags


@pytest.mark.parametrize("argv", [["--list"], ["--help", "lab.up"],
                                  ["--complete", "--", "invoke", "lab."]])
def test_listing_imports_no_library_module(argv: list[str]) -> None:
    code = ("import sys\nfrom invoke.main import program\n"
            f"program.run(['invoke', *{argv!r}], exit=False)\n"
            "mods = sorted(m for m in sys.modules if m == 'paramiko' or m.startswith('lab.'))\n"
            "print('MODULES', ' '.join(mods))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES"))
    modules = set(line.split()[1:])
    allowed = {"lab.errors", "lab.cli", "lab.cli.collection", "lab.cli.common",
               "lab.cli.configfile", "lab.cli.words", "lab.cli.image", "lab.cli.labs",
               "lab.cli.results", "lab.cli.bench", "lab.cli.pipe",
               "lab.cli.scenario", "lab.cli.matrix"}
    assert modules <= allowed, modules - allowed


@pytest.mark.parametrize("argv", [["image.list", "--json"], ["lab.status", "--json"],
                                  ["scenario", "list", "--json"], ["scenario.list", "--json"]])
def test_json_output_parses(tmp_path: Path, argv: list[str]) -> None:
    import json

    proc = run(FENTRY_LAB, *argv, env=cli_env(tmp_path, {}))
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)
    assert isinstance(value, list)
    if argv[0].startswith("scenario"):
        assert any(row["name"] == "acl-basic" for row in value)
