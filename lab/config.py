"""Settings with their defaults, and their validation at the edge, in one place.

Precedence, lowest first: these defaults, the ``lab:`` section of invoke's configuration
(``invoke.yaml``), ``FENTRY_LAB_<NAME>`` environment variables, then task flags. Every
value is checked here (type, range, allowed characters) before anything starts; a bad one
is a UsageError (exit 1) that names the setting and what is allowed.

Files the project ships (image recipes, probes, scenarios) are read from SHIPPED: the
clone when running from one, else the copy inside the installed package. A user's own
scenarios and probes (``./scenarios``, ``./bpf``) are searched before the shipped ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import UsageError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def shipped_root() -> Path:
    """Where images/, bpf/ and scenarios/ are: the clone, or the wheel's lab/_data."""
    if all((REPO_ROOT / part).is_dir() for part in ("images", "bpf", "scenarios")):
        return REPO_ROOT
    return PACKAGE_DIR / "_data"


SHIPPED = shipped_root()

# A lab name becomes a directory, a qemu option value and a libvirt domain name.
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
ACCELS = ("auto", "kvm", "tcg")
BACKENDS = ("qemu", "vagrant")
MIN_MEMORY_MIB = 256
MAX_BOOT_TIMEOUT_S = 24 * 3600.0


def default_home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fentry-lab"


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)  # images, keys, labs
    release: str = "trixie"
    mirror: str = ""  # empty: the recipe's mirror
    kernel: str = ""  # empty: the recipe's (newest with -dbg); or a version, e.g. 7.2.12
    name: str = "default"  # which lab
    backend: str = "qemu"
    accel: str = "auto"  # auto | kvm | tcg
    cpus: int = 2  # measured: 1 vCPU boots twice as slow under TCG, 4 is slower than 2
    memory: int = 2048  # MiB
    boot_timeout: float = 0.0  # seconds; 0 = scaled with the accelerator
    kernel_args: str = ""  # appended to the guest kernel's command line
    results: Path = field(default_factory=lambda: Path.cwd() / "results")
    scenarios: Path = field(default_factory=lambda: Path.cwd() / "scenarios")  # the user's
    probes: Path = field(default_factory=lambda: Path.cwd() / "bpf")  # the user's
    images_dir: Path = SHIPPED / "images"
    scenarios_dir: Path = SHIPPED / "scenarios"
    bpf_dir: Path = SHIPPED / "bpf"

    @property
    def images_cache(self) -> Path:
        return self.home / "images"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def labs_dir(self) -> Path:
        return self.home / "labs"

    @property
    def scenario_dirs(self) -> tuple[Path, ...]:
        """Where scenarios are looked up, the user's first (a name there wins)."""
        return _unique(self.scenarios, self.scenarios_dir)

    @property
    def bpf_dirs(self) -> tuple[Path, ...]:
        """Where a probe's ``bpf/...`` source is looked up, the user's first."""
        return _unique(self.probes, self.bpf_dir)

    def with_overrides(self, values: Mapping[str, object]) -> Settings:
        """A copy with the given fields replaced; None values are ignored (flag not given)."""
        changes: dict[str, object] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for key, value in values.items():
            if value is None:
                continue
            key = key.replace("-", "_")
            if key not in fields:
                raise UsageError(
                    f"Unknown setting {key!r}. Known settings: {', '.join(sorted(fields))}."
                )
            changes[key] = _coerce(key, value, getattr(self, key))
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _unique(*paths: Path) -> tuple[Path, ...]:
    seen: list[Path] = []
    for path in paths:
        if all(path.resolve() != other.resolve() for other in seen):
            seen.append(path)
    return tuple(seen)


def _coerce(key: str, value: object, current: object) -> object:
    if isinstance(value, Mapping | list | tuple | set):
        raise UsageError(f"Setting {key!r} has the value {value!r}, which is a "
                         f"{type(value).__name__}; a single value is needed.")
    if isinstance(current, Path):
        text = str(value)
        if not text.strip() or "\0" in text:
            raise UsageError(f"Setting {key!r} is empty (or has a NUL byte): give a directory "
                             f"path, e.g. FENTRY_LAB_{key.upper()}=~/.cache/fentry-lab, or "
                             "unset it for the default.")
        return Path(text).expanduser().absolute()
    try:
        if isinstance(current, bool):
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if not isinstance(value, int | float) else int(value)
        if isinstance(current, float):
            number = float(str(value))
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        raise UsageError(
            f"Setting {key!r} has the value {value!r}, which is not a number.") from None
    return str(value)


def from_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """FENTRY_LAB_<FIELD> variables; other FENTRY_LAB_* names are left alone."""
    prefix = "FENTRY_LAB_"
    known = {f.name for f in dataclasses.fields(Settings)}
    found = {k[len(prefix):].lower(): v for k, v in environ.items() if k.startswith(prefix)}
    return {k: v for k, v in found.items() if k in known}


def check_name(value: str, what: str = "lab name") -> str:
    """A plain identifier, so it can never leave its folder or split an option string."""
    if not _NAME.match(value) or value in (".", ".."):
        raise UsageError(f"The {what} {value[:80]!r}{'...' if len(value) > 80 else ''} is "
                         f"not allowed: use {NAME_RULE} (e.g. default, ci-1).")
    return value


def host_cpus() -> int:
    return os.cpu_count() or 1


def host_memory_mib() -> int:
    """MemTotal of the host, or a large number when /proc/meminfo cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 30


def validate(settings: Settings) -> Settings:
    """Refuse any value that would fail late or reach a place it must not (exit 1)."""
    s = settings
    check_name(s.name)
    if s.accel not in ACCELS:
        raise UsageError(f"Unknown accelerator {s.accel!r}: use auto, kvm or tcg.")
    if s.backend not in BACKENDS:
        raise UsageError(f"Unknown backend {s.backend!r}: use qemu or vagrant.")
    max_cpus = min(64, 4 * host_cpus())
    if not 1 <= s.cpus <= max_cpus:
        raise UsageError(f"Setting 'cpus' is {s.cpus}: use 1 to {max_cpus} "
                         f"(this host has {host_cpus()} cores; 2 is fastest under TCG).")
    max_memory = max(MIN_MEMORY_MIB, host_memory_mib())
    if not MIN_MEMORY_MIB <= s.memory <= max_memory:
        raise UsageError(f"Setting 'memory' is {s.memory} MiB: use {MIN_MEMORY_MIB} to "
                         f"{max_memory} (this host's RAM in MiB; the default is 2048).")
    if s.boot_timeout != 0 and not 1 <= s.boot_timeout <= MAX_BOOT_TIMEOUT_S:
        raise UsageError(f"Setting 'boot_timeout' is {s.boot_timeout:g} s: use 0 (automatic:"
                         f" 45 s, x4 under TCG) or 1 to {MAX_BOOT_TIMEOUT_S:.0f} seconds.")
    if s.mirror and not re.match(r"https?://[^\s'\"\\]+\Z", s.mirror):
        raise UsageError(f"Setting 'mirror' is {s.mirror!r}: use an http:// or https:// URL "
                         "without spaces or quotes (e.g. http://deb.debian.org/debian).")
    if any(ch in s.kernel_args for ch in "\0\n\r"):
        raise UsageError("Setting 'kernel_args' has a NUL byte or a line break: give the "
                         "kernel parameters on one line, separated by spaces.")
    recipes = sorted(p.stem for p in s.images_dir.glob("*.yaml") if p.stem != "customize")
    if not _NAME.match(s.release) or not (s.images_dir / f"{s.release}.yaml").is_file():
        raise UsageError(f"Unknown release {s.release!r}: use one of {', '.join(recipes)} "
                         f"(the recipes in {s.images_dir}).")
    for key in ("home", "results"):
        path: Path = getattr(s, key)
        if path.exists() and not path.is_dir():
            raise UsageError(f"Setting {key!r} is {path}, which is a file: it must be a "
                             "directory (or not exist yet). Point it elsewhere "
                             f"(FENTRY_LAB_{key.upper()}=DIR) or move the file.")
    if s.scenarios.exists() and not s.scenarios.is_dir():
        raise UsageError(f"--scenarios {s.scenarios} is a file: give the directory that "
                         "holds your scenario YAML files.")
    return s


def load_settings(
    invoke_config: Mapping[str, object] | None = None,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    settings = Settings()
    if invoke_config:
        settings = settings.with_overrides(invoke_config)
    settings = settings.with_overrides(from_environment(os.environ if environ is None else environ))
    if flags:
        settings = settings.with_overrides(flags)
    default = Settings()
    if settings.scenarios != default.scenarios and settings.probes == default.probes:
        # Your scenarios elsewhere (--scenarios DIR): your probes beside them, in DIR/../bpf.
        settings = dataclasses.replace(settings, probes=settings.scenarios.parent / "bpf")
    return validate(settings)
