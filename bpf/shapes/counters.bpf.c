// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: counters in a global array (.bss) and in a hash map, read after the
 * steps, as libbpf-tools' vfsstat and the kernel selftests' result globals do.
 * A `const volatile` knob in .rodata filters by uid (opensnoop's targ_uid).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

enum counter { C_CALLS, C_FAILED, C_MAX };

const volatile __u32 targ_uid = (__u32)-1;	/* -1: every user */

__u64 counts[C_MAX];
__s32 last_ret;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);	/* uid */
	__type(value, __u64);	/* calls */
} calls_by_uid SEC(".maps");

SEC("fexit/do_set_acl")
int BPF_PROG(count_set_acl, struct mnt_idmap *idmap, struct dentry *dentry,
	     const char *acl_name, const void *kvalue, size_t size, int ret)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	__u64 one = 1, *n;

	if (targ_uid != (__u32)-1 && uid != targ_uid)
		return 0;
	__sync_fetch_and_add(&counts[C_CALLS], 1);
	if (ret)
		__sync_fetch_and_add(&counts[C_FAILED], 1);
	last_ret = ret;
	n = bpf_map_lookup_elem(&calls_by_uid, &uid);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&calls_by_uid, &uid, &one, BPF_NOEXIST);
	return 0;
}
