#!/usr/bin/env python3
"""Shape: a BCC Python tool as upstream writes them (bcc's tools/*.py): it compiles its
own C at start-up, attaches a kprobe and a kretprobe, and prints one line per call from a
perf buffer until Ctrl-C. It prints no lab ready line; the lab sees its programs appear in
bpftool instead."""

import sys

from bcc import BPF

PROGRAM = r"""
#include <uapi/linux/ptrace.h>

struct call_t {
    u32 pid;
    int ret;
    u64 ns;
    char comm[16];
};

BPF_HASH(start, u32, u64);
BPF_PERF_OUTPUT(calls);

int on_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 ts = bpf_ktime_get_ns();
    start.update(&tid, &ts);
    return 0;
}

int on_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *ts = start.lookup(&tid);
    struct call_t call = {};
    if (!ts)
        return 0;
    call.pid = bpf_get_current_pid_tgid() >> 32;
    call.ret = PT_REGS_RC(ctx);
    call.ns = bpf_ktime_get_ns() - *ts;
    bpf_get_current_comm(&call.comm, sizeof(call.comm));
    calls.perf_submit(ctx, &call, sizeof(call));
    start.delete(&tid);
    return 0;
}
"""


def show(_cpu, data, _size):
    call = bpf["calls"].event(data)
    print(f"{call.comm.decode(errors='replace'):16} {call.pid:<6} {call.ret:>4} {call.ns}",
          flush=True)


bpf = BPF(text=PROGRAM)
bpf.attach_kprobe(event="do_set_acl", fn_name="on_entry")
bpf.attach_kretprobe(event="do_set_acl", fn_name="on_return")
bpf["calls"].open_perf_buffer(show)
print("COMM             PID     RET  NS", flush=True)
try:
    while True:
        bpf.perf_buffer_poll()
except KeyboardInterrupt:
    sys.exit(0)
