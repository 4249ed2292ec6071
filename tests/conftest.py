"""Shared fixtures; every test under tests/vm/ boots real VMs and is marked `vm`."""

from __future__ import annotations

from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parent / "vm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if VM_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)
