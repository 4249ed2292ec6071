"""The one preflight: can this (kernel-resolved) scenario run on this kernel?

Used by the runner (which refuses to load anything when it fails) and by the kernel
matrix (which records the release as "not applicable" with the reason).
"""

from __future__ import annotations

from lab.run.guest import Facts
from lab.scenario.model import Scenario, format_version


def preflight_problems(scenario: Scenario, facts: Facts) -> list[str]:
    """Why the scenario cannot run on the kernel the facts describe; empty when it can."""
    kernel = facts.kernel
    release = kernel.release
    problems = []
    need = scenario.requires.kernel
    if kernel.version < tuple(need):
        problems.append(f"kernel {release} is older than the {format_version(need)} this "
                        "scenario needs")
    if not kernel.btf:
        problems.append(f"kernel {release} has no BTF (/sys/kernel/btf/vmlinux), which "
                        "fentry/fexit need")
    reason = (f": {scenario.variant.reason}"
              if scenario.variant is not None and scenario.variant.reason else "")
    for fn in scenario.requires.functions:
        if not facts.traceable.get(fn):
            where = ("exists but is not traceable (not in available_filter_functions)"
                     if facts.in_kallsyms.get(fn) else "is absent")
            problems.append(f"`{fn}` {where} in {release}{reason}")
    if kernel.build_id_running != kernel.build_id_debug_vmlinux:
        problems.append(f"the debug vmlinux's build ID {kernel.build_id_debug_vmlinux} "
                        f"differs from the running kernel's {kernel.build_id_running}")
    return problems
