// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: a kprobe/kretprobe pair, the pre-fentry way to see a call and its
 * return value; records go to the lab's conventional "events" ring buffer.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct event {
	char probe[12];		/* "kprobe" or "kretprobe" */
	__u32 pid;
	__s32 retval;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct event event_layout __attribute__((unused));

static __always_inline void emit(const char *probe, int retval)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return;
	__builtin_memcpy(e->probe, probe, sizeof(e->probe));
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->retval = retval;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

SEC("kprobe/do_set_acl")
int BPF_KPROBE(enter_set_acl)
{
	emit("kprobe\0\0\0\0\0", 0);
	return 0;
}

SEC("kretprobe/do_set_acl")
int BPF_KRETPROBE(exit_set_acl, int ret)
{
	emit("kretprobe\0\0", ret);
	return 0;
}
