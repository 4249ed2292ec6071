// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: a ring buffer not named "events" whose record type is only in the
 * object's DWARF (no global uses it, so clang leaves it out of the BTF), as
 * many upstream tools write it. The lab finds the buffer by its type and the
 * record layout in the DWARF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct xattr_call {
	__u32 pid;
	__u32 uid;
	char comm[16];
	struct {
		char name[32];
		__u32 len;
	} file;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

SEC("fentry/do_set_acl")
int BPF_PROG(on_set_acl, struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name)
{
	struct xattr_call *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);

	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->file.len = bpf_probe_read_kernel_str(e->file.name, sizeof(e->file.name),
						BPF_CORE_READ(dentry, d_name.name));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
