"""The terminal's short version: entry bytes before and attached, and one line per call."""

from __future__ import annotations

from pathlib import Path

from lab.insn import named_branch
from lab.results.report.bundle import load_bundle
from lab.results.report.calls import pair_calls


def short_text(bundle_dir: Path) -> str:
    """e.g.
    do_set_acl  before    66 0f 1f 00 |0f 1f 44 00 00| 41 55  nopw (%rax); nopl 0x0(%rax,%rax,1)
                attached  66 0f 1f 00 |e8 97 ff 94 39| 41 55  call bpf_trampoline_6442…
    setfacl[355] uid=1000 do_set_acl(passwd, system.posix_acl_access) = -1 EPERM 2.5 ms
    """
    bundle = load_bundle(bundle_dir)
    lines = []
    for fn, readings in bundle.live.items():
        if not isinstance(readings, dict):
            continue
        label = fn
        for phase in ("before", "attached"):
            reading = readings.get(phase)
            if not isinstance(reading, dict) or not reading.get("instructions"):
                continue
            insns = list(reading["instructions"])
            # The patch site: the first 5-byte instruction (after endbr64 where there is one).
            site = next((i for i, insn in enumerate(insns[:3])
                         if len(str(insn.get("bytes", "")).split()) == 5), 0)
            target = reading.get("call_target") or {}
            texts = []
            for insn in insns[:site + 1]:
                texts.append(named_branch(str(insn.get("text", "")), target))
            cells = [str(i.get("bytes", "")) for i in insns]
            picture = (f"{' '.join(cells[:site])} |{cells[site] if cells else ''}| "
                       f"{' '.join(cells[site + 1:site + 2])}").strip()
            lines.append(f"{label:<12} {phase:<9} {picture:<36} {'; '.join(texts)}")
            label = ""
    for call in pair_calls(bundle.events):
        lines.append(call.line())
    return "\n".join(lines)
