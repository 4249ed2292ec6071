// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: a tool with its own libbpf loader (own_loader.c, skeleton-based, as
 * libbpf-bootstrap and libbpf-tools are written); its `min_uid` knob is set by
 * the loader before load, and it prints its own lines.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 min_uid = 0;

struct call {
	__u32 uid;
	__s32 ret;
	char name[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} calls SEC(".maps");

SEC("fexit/do_set_acl")
int BPF_PROG(set_acl_exit, struct mnt_idmap *idmap, struct dentry *dentry,
	     const char *acl_name, const void *kvalue, size_t size, int ret)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct call *c;

	if (uid < min_uid)
		return 0;
	c = bpf_ringbuf_reserve(&calls, sizeof(*c), 0);
	if (!c)
		return 0;
	c->uid = uid;
	c->ret = ret;
	bpf_probe_read_kernel_str(c->name, sizeof(c->name), BPF_CORE_READ(dentry, d_name.name));
	bpf_ringbuf_submit(c, 0);
	return 0;
}
