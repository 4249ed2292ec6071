/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Record layout shared by fentry.bpf.c and fexit.bpf.c.
 *
 * Each probe hit reserves one struct event in the BPF_MAP_TYPE_RINGBUF map
 * named "events".  User space does not need this header: lab-loader prints
 * the raw record bytes and the host decodes them with the BTF that clang
 * emits for this struct (lab/btf_events.py).
 */
#ifndef ACL_EVENT_H
#define ACL_EVENT_H

#define ACL_EVENT_NAME_LEN 64

struct event {
	char probe[8];		/* "fentry" or "fexit" */
	char function[32];	/* traced kernel function: "do_set_acl" */
	char comm[16];		/* current->comm */
	__u32 pid;		/* thread group id (user-space pid) */
	__u32 uid;
	__s32 retval;		/* only meaningful for fexit */
	char dentry[ACL_EVENT_NAME_LEN];
	char acl_name[ACL_EVENT_NAME_LEN];
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
};

#endif /* ACL_EVENT_H */
