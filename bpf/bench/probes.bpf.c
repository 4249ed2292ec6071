// SPDX-License-Identifier: GPL-2.0
// Probe-cost benchmark: one program per attach mode, each counting its hits in a per-CPU
// array (slot = mode) for the benchmark's own process only. The attach target is set by
// the loader (bench.c) at run time, so the section names below are placeholders.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
const volatile long target_syscall = -1;

enum { FENTRY, FEXIT, KPROBE, KRETPROBE, KPROBE_MULTI, RAW_TP, SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline int count(__u32 slot)
{
	__u64 *value;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	value = bpf_map_lookup_elem(&hits, &slot);
	if (value)
		*value += 1;  /* per-CPU slot: no atomics needed */
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int BPF_PROG(bench_fentry) { return count(FENTRY); }

SEC("fexit/__x64_sys_getpgid")
int BPF_PROG(bench_fexit) { return count(FEXIT); }

SEC("kprobe")
int BPF_KPROBE(bench_kprobe) { return count(KPROBE); }

SEC("kretprobe")
int BPF_KRETPROBE(bench_kretprobe) { return count(KRETPROBE); }

SEC("kprobe.multi")
int BPF_KPROBE(bench_kprobe_multi) { return count(KPROBE_MULTI); }

SEC("raw_tp/sys_enter")
int BPF_PROG(bench_raw_tp, struct pt_regs *regs, long id)
{
	if (id != target_syscall)
		return 0;
	return count(RAW_TP);
}
