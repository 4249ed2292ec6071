"""`scenario new`: a scenario and a probe skeleton for any kernel function, from the
function's signature in the lab kernel's BTF (as `bpftrace -lv` prints it).

The probe records every call into the lab's conventional `events` ring buffer (one
`struct event` per hit, decoded on the host from the object's BTF) and prints a
`bpf_printk` line, so the new scenario runs as it is and shows the calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.config import Settings
from lab.errors import PreflightError, UsageError
from lab.ssh import Session
from lab.vm import backend_for

FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
SCENARIO_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Arguments the skeleton records by value; anything else is only named in a comment.
_SCALARS = re.compile(r"^(const )?(unsigned |signed )?(char|short|int|long|long long|"
                      r"bool|_Bool|size_t|ssize_t|loff_t|umode_t|pid_t|uid_t|gid_t|"
                      r"u8|u16|u32|u64|s8|s16|s32|s64|__u8|__u16|__u32|__u64|__s8|"
                      r"__s16|__s32|__s64)$")


@dataclass(frozen=True)
class Param:
    type: str
    name: str

    @property
    def scalar(self) -> bool:
        return bool(_SCALARS.match(self.type))


@dataclass(frozen=True)
class Signature:
    function: str
    params: tuple[Param, ...]
    returns: str  # "" when bpftrace did not print a retval (void)


def parse_listing(function: str, text: str) -> Signature:
    """`bpftrace -lv 'fentry:F'` output -> Signature; PreflightError when F is absent."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines or not any(line.split(":")[-1] == function for line in lines[:1]):
        raise PreflightError(
            f"The lab's kernel has no traceable function `{function}` (bpftrace -lv found "
            "nothing): check the name in /proc/kallsyms or available_filter_functions of "
            "the lab (`invoke lab.ssh -c 'grep -w FUNCTION /proc/kallsyms'`).")
    params: list[Param] = []
    returns = ""
    for line in lines[1:]:
        if not line[:1].isspace():  # bpftrace's own notes ("BTF: using data from ...")
            continue
        decl = line.strip().rstrip(";")  # bpftrace before 0.17 ends each with ';'
        type_, _, name = decl.rpartition(" ")
        type_ = type_.strip()
        if name == "retval":
            returns = type_
        elif type_ and name:
            params.append(Param(type_.replace(" *", "*").replace("*", " *").strip(), name))
    return Signature(function, tuple(params), returns)


def check_names(name: str, function: str) -> None:
    if not SCENARIO_NAME.match(name):
        raise UsageError(f"Scenario name {name!r}: use lower-case letters, digits, '-' and "
                         "'_' (at most 64 characters, starting with a letter or digit).")
    if not FUNCTION_NAME.match(function):
        raise UsageError(f"Function {function!r} is not a kernel function name.")


def _c_params(sig: Signature) -> str:
    return "".join(f",\n\t     {p.type}{'' if p.type.endswith('*') else ' '}{p.name}"
                   for p in sig.params)


def probe_source(sig: Signature, *, fexit: bool, kprobe: bool) -> str:
    """The .bpf.c skeleton: fentry (+fexit) on the function, or a kprobe pair."""
    fn = sig.function
    scalars = [p for p in sig.params if p.scalar][:4]
    fields = "".join(f"\t__s64 {p.name};\n" for p in scalars)
    copy = "".join(f"\te->{p.name} = (__s64){p.name};\n" for p in scalars)
    others = ", ".join(p.name for p in sig.params if not p.scalar)
    note = (f"\t/* Not recorded (pointers and structs): {others}. Read what you need\n"
            "\t * with BPF_CORE_READ(), as bpf/acl/fentry.bpf.c does. */\n") if others else ""
    head = f"""// SPDX-License-Identifier: GPL-2.0
/*
 * Probes on {fn}(), made by `invoke scenario new`.
 * Signature in the lab kernel's BTF:
 *   {sig.returns or 'void'} {fn}({', '.join(f'{p.type} {p.name}' for p in sig.params)})
 * Each call becomes one struct event in the "events" ring buffer (decoded on
 * the host from this object's BTF) and one bpf_printk line in trace_pipe.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct event {{
\tchar probe[12];\t\t/* "fentry", "fexit", "kprobe" or "kretprobe" */
\tchar function[32];
\tchar comm[16];
\t__u32 pid;
\t__u32 uid;
\t__s64 retval;\t\t/* fexit and kretprobe only */
{fields}}};

struct {{
\t__uint(type, BPF_MAP_TYPE_RINGBUF);
\t__uint(max_entries, 256 * 1024);
}} events SEC(".maps");

/* A typed global keeps struct event in the object's BTF for the host's decoder. */
struct event event_layout __attribute__((unused));

static __always_inline struct event *start(const char *probe)
{{
\tstruct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

\tif (!e)
\t\treturn 0;
\t__builtin_memset(e, 0, sizeof(*e));
\t__builtin_memcpy(e->probe, probe, sizeof(e->probe));
\t__builtin_memcpy(e->function, "{fn[:31]}", sizeof("{fn[:31]}"));
\te->pid = bpf_get_current_pid_tgid() >> 32;
\te->uid = (__u32)bpf_get_current_uid_gid();
\tbpf_get_current_comm(e->comm, sizeof(e->comm));
\treturn e;
}}
"""
    if kprobe:
        body = f"""
SEC("kprobe/{fn}")
int BPF_KPROBE(on_entry)
{{
\tstruct event *e = start("kprobe\\0\\0\\0\\0\\0");

\tif (!e)
\t\treturn 0;
\tbpf_printk("{fn}: kprobe pid=%d", e->pid);
\tbpf_ringbuf_submit(e, 0);
\treturn 0;
}}

SEC("kretprobe/{fn}")
int BPF_KRETPROBE(on_return, long ret)
{{
\tstruct event *e = start("kretprobe\\0\\0");

\tif (!e)
\t\treturn 0;
\te->retval = ret;
\tbpf_printk("{fn}: kretprobe pid=%d retval=%ld", e->pid, ret);
\tbpf_ringbuf_submit(e, 0);
\treturn 0;
}}
"""
        return head + body
    body = f"""
SEC("fentry/{fn}")
int BPF_PROG(on_entry{_c_params(sig)})
{{
\tstruct event *e = start("fentry\\0\\0\\0\\0\\0");

\tif (!e)
\t\treturn 0;
{copy}{note}\tbpf_printk("{fn}: fentry pid=%d", e->pid);
\tbpf_ringbuf_submit(e, 0);
\treturn 0;
}}
"""
    if fexit:
        ret_param = f",\n\t     {sig.returns} ret" if sig.returns else ""
        keep_ret = "\te->retval = (__s64)ret;\n" if sig.returns else ""
        body += f"""
SEC("fexit/{fn}")
int BPF_PROG(on_exit{_c_params(sig)}{ret_param})
{{
\tstruct event *e = start("fexit\\0\\0\\0\\0\\0\\0");

\tif (!e)
\t\treturn 0;
{copy}{keep_ret}\tbpf_printk("{fn}: fexit pid=%d", e->pid);
\tbpf_ringbuf_submit(e, 0);
\treturn 0;
}}
"""
    return head + body


def scenario_text(name: str, sig: Signature, source: str, *, fexit: bool,
                  kprobe: bool) -> str:
    probe = "kprobe" if kprobe else "fentry"
    kernel = '"5.5"' if not kprobe else '"4.18"'
    return f"""# yaml-language-server: $schema=./schema.json
# Made by `invoke scenario new {name} --function {sig.function}`: edit the steps so they
# call {sig.function}(), then `invoke scenario run {name}`.
name: {name}
description: "{probe}{' and fexit' if fexit and not kprobe else ''} on {sig.function}"
requires:
  kernel: {kernel}
  functions: [{sig.function}]
probes:
  - {{name: {probe}, source: {source}, loader: libbpf}}
steps:
  - name: something that calls {sig.function}
    run: [true]
expect:
  events:
    - {{probe: {probe}, match: {{function: {sig.function}}}, min: 0}}
collect:
  objdump: [{sig.function}]
  live_text: [{sig.function}]
  bpftrace_lv: [{sig.function}]
"""


def write_scaffold(name: str, sig: Signature, scenarios_dir: Path, bpf_dir: Path, *,
                   fexit: bool, kprobe: bool, force: bool = False) -> list[Path]:
    """Write scenarios/NAME.yaml and bpf/NAME/NAME.bpf.c; refuses to overwrite."""
    check_names(name, sig.function)
    source_path = bpf_dir / name / f"{name}.bpf.c"
    scenario_path = scenarios_dir / f"{name}.yaml"
    for path in (source_path, scenario_path):
        if path.exists() and not force:
            raise UsageError(f"{path} exists already: pick another name, or remove it.")
    source_path.parent.mkdir(parents=True, exist_ok=True)
    scenario_path.parent.mkdir(parents=True, exist_ok=True)
    source_path.write_text(probe_source(sig, fexit=fexit, kprobe=kprobe))
    relative = f"bpf/{name}/{name}.bpf.c"
    scenario_path.write_text(scenario_text(name, sig, relative, fexit=fexit, kprobe=kprobe))
    return [scenario_path, source_path]


def new_scenario(settings: Settings, name: str, function: str, *, fexit: bool,
                 kprobe: bool) -> list[Path]:
    """Read the function's signature on the lab (brought up if needed) and write the
    skeleton into the user's own scenarios/ and bpf/ (the current directory's)."""
    backend = backend_for(settings)
    with Session(backend.up().target) as ssh:
        # fexit: lists the argument names and, unlike fentry: on bpftrace 0.27, retval;
        # bpftrace before 0.20 knows it as kfunc:.
        listing = ssh.run(["sh", "-c", f"bpftrace -lv 'fexit:{function}' 2>/dev/null || "
                           f"bpftrace -lv 'kfunc:{function}'"], timeout=300)
    sig = parse_listing(function, listing.out)
    return write_scaffold(name, sig, settings.scenarios, settings.probes,
                          fexit=fexit, kprobe=kprobe)
