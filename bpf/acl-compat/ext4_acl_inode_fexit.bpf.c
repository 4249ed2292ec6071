// SPDX-License-Identifier: GPL-2.0
/*
 * fexit probe on ext4_set_acl() for kernels 5.5 to 5.11 (bullseye's 5.10):
 *
 *   int ext4_set_acl(struct inode *inode, struct posix_acl *acl, int type);
 *
 * The argument list must be the running kernel's: BPF_PROG reads the arguments
 * by position.
 */
#ifndef __TARGET_ARCH_x86
#define __TARGET_ARCH_x86
#endif
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ext4_acl.h"

SEC("fexit/ext4_set_acl")
int BPF_PROG(handle_ext4_set_acl, struct inode *inode, struct posix_acl *acl, int type, int retval)
{
	return report(inode, type, retval, 1);
}
