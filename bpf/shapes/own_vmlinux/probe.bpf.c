// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: a probe built against the vmlinux.h beside it (not the running
 * kernel's): the lab's build must pick this one.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#ifndef SHIPPED_VMLINUX_H
#error "built against the running kernel's vmlinux.h, not the one shipped beside this file"
#endif

char LICENSE[] SEC("license") = "GPL";

__u64 hits;
char last_name[32];

SEC("fentry/do_set_acl")
int BPF_PROG(on_set_acl, struct mnt_idmap *idmap, struct dentry *dentry)
{
	__sync_fetch_and_add(&hits, 1);
	bpf_probe_read_kernel_str(last_name, sizeof(last_name),
				  BPF_CORE_READ(dentry, d_name.name));
	return 0;
}
