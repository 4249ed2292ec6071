"""Settings with their defaults in one place.

Precedence, lowest first: these defaults, the ``lab:`` section of invoke's configuration
(``invoke.yaml``), ``FENTRY_LAB_<NAME>`` environment variables, then task flags.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    results: Path = REPO_ROOT / "results"
    images_dir: Path = REPO_ROOT / "images"
    scenarios_dir: Path = REPO_ROOT / "scenarios"
    bpf_dir: Path = REPO_ROOT / "bpf"

    @property
    def images_cache(self) -> Path:
        return self.home / "images"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def labs_dir(self) -> Path:
        return self.home / "labs"

    def with_overrides(self, values: Mapping[str, object]) -> Settings:
        """A copy with the given fields replaced; None values are ignored (flag not given)."""
        changes: dict[str, object] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for key, value in values.items():
            if value is None:
                continue
            key = key.replace("-", "_")
            if key not in fields:
                raise LabError(
                    f"Unknown setting {key!r}. Known settings: {', '.join(sorted(fields))}."
                )
            changes[key] = _coerce(key, value, getattr(self, key))
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _coerce(key: str, value: object, current: object) -> object:
    try:
        if isinstance(current, Path):
            return Path(str(value)).expanduser()
        if isinstance(current, bool):
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(str(value))
        if isinstance(current, float):
            return float(str(value))
    except ValueError:
        raise LabError(f"Setting {key!r} has the value {value!r}, which is not a number.") from None
    return str(value)


def from_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """FENTRY_LAB_<FIELD> variables; other FENTRY_LAB_* names are left alone."""
    prefix = "FENTRY_LAB_"
    known = {f.name for f in dataclasses.fields(Settings)}
    found = {k[len(prefix):].lower(): v for k, v in environ.items() if k.startswith(prefix)}
    return {k: v for k, v in found.items() if k in known}


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
    if settings.accel not in ("auto", "kvm", "tcg"):
        raise LabError(f"Unknown accelerator {settings.accel!r}: use auto, kvm or tcg.")
    if settings.backend not in ("qemu", "vagrant"):
        raise LabError(f"Unknown backend {settings.backend!r}: use qemu or vagrant.")
    return settings
