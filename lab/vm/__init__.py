"""VM backends behind one small interface (lab.vm.base.Backend)."""

from __future__ import annotations

from lab.config import Settings
from lab.errors import LabError
from lab.vm.base import Backend


def backend_for(settings: Settings) -> Backend:
    if settings.backend == "qemu":
        from lab.vm.qemu import QemuBackend

        return QemuBackend(settings)
    if settings.backend == "vagrant":
        from lab.vm.vagrant.backend import VagrantBackend

        return VagrantBackend(settings)
    raise LabError(f"The {settings.backend!r} backend is not available yet; use --backend qemu.")
