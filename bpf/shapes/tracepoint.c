// SPDX-License-Identifier: GPL-2.0
/*
 * Shape: a tracepoint-only program built from the UAPI headers, without
 * vmlinux.h (<linux/bpf.h> needs Debian's multiarch include path for
 * <asm/types.h>), under a plain .c name. It counts setxattr(2) calls per
 * syscall in a global array.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* The layout of syscalls:sys_enter_* records (see the tracepoint's format). */
struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

__u64 setxattr_calls;
__u64 lsetxattr_calls;

SEC("tracepoint/syscalls/sys_enter_setxattr")
int count_setxattr(struct sys_enter_ctx *ctx)
{
	__sync_fetch_and_add(&setxattr_calls, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_lsetxattr")
int count_lsetxattr(struct sys_enter_ctx *ctx)
{
	__sync_fetch_and_add(&lsetxattr_calls, 1);
	return 0;
}
