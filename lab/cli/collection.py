"""The task collection: one namespace per module of lab/cli.

To add a task: write it in its namespace's module with `@lab_task(help={...})` (see
lab/cli/common.py) and add it to that module's TASKS; a new namespace is a new module with
TASKS (and an optional DEFAULT) plus one line in NAMESPACES below.
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from invoke.collection import Collection
from invoke.tasks import Task

NAMESPACES = ("image", "lab:labs", "scenario", "matrix", "results", "bench")
# ("namespace[:module]")


def build_collection() -> Collection:
    root = Collection()
    for entry in NAMESPACES:
        name, _, module_name = entry.partition(":")
        module = importlib.import_module(f"lab.cli.{module_name or name}")
        tasks: dict[str, Any] = module.TASKS
        default = getattr(module, "DEFAULT", None)
        collection = Collection(name)
        for task_name, body in tasks.items():
            collection.add_task(cast(Task[Any], body), task_name, default=task_name == default)
        root.add_collection(collection)
    root.configure({"lab": {}})
    return root


ns = build_collection()
