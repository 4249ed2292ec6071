/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared body of the probes on ext4_set_acl() for kernels before 6.2, where
 * do_set_acl() does not exist yet: setxattr("system.posix_acl_*") reaches the
 * filesystem's ->set_acl through set_posix_acl(). The records use the seed's
 * layout (../acl/acl_event.h), so events of both kinds compare field by field.
 *
 * ext4_set_acl() gets an inode, not a dentry, and an ACL type, not an xattr
 * name: the probe takes the name of the inode's first dentry alias and maps
 * ACL_TYPE_ACCESS/ACL_TYPE_DEFAULT to the xattr name setfacl used.
 *
 * The programs are built in the guest against its own kernel's BTF, so
 * offsetof() below is that kernel's layout.
 */
#ifndef EXT4_ACL_H
#define EXT4_ACL_H

#include "../acl/acl_event.h"

#define ACL_TYPE_ACCESS 0x8000
#define ACL_TYPE_DEFAULT 0x4000

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Puts struct event into the object's BTF for the host's decoder (never used). */
static struct event event_layout __attribute__((used));

static __always_inline void inode_name(struct inode *inode, char *out, int size)
{
	struct hlist_node *alias = BPF_CORE_READ(inode, i_dentry.first);
	struct dentry *dentry;
	const unsigned char *name;

	if (!alias)
		return;
	dentry = (struct dentry *)((char *)alias - __builtin_offsetof(struct dentry, d_u.d_alias));
	name = BPF_CORE_READ(dentry, d_name.name);
	if (name)
		bpf_probe_read_kernel_str(out, size, name);
}

static __always_inline void acl_xattr_name(int type, char *out)
{
	if (type == ACL_TYPE_ACCESS)
		__builtin_memcpy(out, "system.posix_acl_access", sizeof("system.posix_acl_access"));
	else if (type == ACL_TYPE_DEFAULT)
		__builtin_memcpy(out, "system.posix_acl_default", sizeof("system.posix_acl_default"));
}

/*
 * The seed's trace lines. Before 5.13 bpf_trace_printk() takes one %s at most, so the
 * xattr name is part of the format.
 */
static __always_inline void print_line(const char *dentry, int type, int retval, int is_exit)
{
	if (is_exit) {
		if (type == ACL_TYPE_ACCESS)
			bpf_printk("ext4_set_acl: dentry=%s, acl_name=system.posix_acl_access, "
				   "retval=%d\n", dentry, retval);
		else
			bpf_printk("ext4_set_acl: dentry=%s, acl_name=system.posix_acl_default, "
				   "retval=%d\n", dentry, retval);
	} else {
		if (type == ACL_TYPE_ACCESS)
			bpf_printk("ext4_set_acl: dentry=%s, acl_name=system.posix_acl_access\n",
				   dentry);
		else
			bpf_printk("ext4_set_acl: dentry=%s, acl_name=system.posix_acl_default\n",
				   dentry);
	}
}

static __always_inline int report(struct inode *inode, int type, int retval, int is_exit)
{
	struct event *e;

	/* The record is filled in place: a 512-byte BPF stack has no room for copies. */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (is_exit)
		__builtin_memcpy(e->probe, "fexit", sizeof("fexit"));
	else
		__builtin_memcpy(e->probe, "fentry", sizeof("fentry"));
	__builtin_memcpy(e->function, "ext4_set_acl", sizeof("ext4_set_acl"));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->retval = retval;
	inode_name(inode, e->dentry, sizeof(e->dentry));
	acl_xattr_name(type, e->acl_name);
	e->ts_ns = bpf_ktime_get_ns();
	print_line(e->dentry, type, retval, is_exit);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

#endif /* EXT4_ACL_H */
