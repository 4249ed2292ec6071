// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: a perf buffer (BPF_MAP_TYPE_PERF_EVENT_ARRAY), as older tools and
 * bcc's libbpf-tools use where ring buffers are missing. The record type is
 * kept in BTF here through a typed global.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct acl_hit {
	__u32 pid;
	__s32 ret;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} hits SEC(".maps");

struct acl_hit unused_hit __attribute__((unused));

SEC("fexit/do_set_acl")
int BPF_PROG(on_set_acl_exit, struct mnt_idmap *idmap, struct dentry *dentry,
	     const char *acl_name, const void *kvalue, size_t size, int ret)
{
	struct acl_hit e = {};

	e.pid = bpf_get_current_pid_tgid() >> 32;
	e.ret = ret;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &hits, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
