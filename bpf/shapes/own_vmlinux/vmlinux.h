/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shape: a vmlinux.h shipped beside the source, as libbpf-tools and
 * libbpf-bootstrap do (theirs is generated once per architecture). This one is
 * cut down to what probe.bpf.c uses; CO-RE relocates the fields at load time,
 * so it need not match the running kernel's layout.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef _Bool bool;
typedef signed char __s8;
typedef short __s16;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

struct qstr {
	const unsigned char *name;
};

struct dentry {
	struct qstr d_name;
};

struct mnt_idmap;

enum {
	BPF_ANY = 0,
};

enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
};

/* Marks this header as the lab's shipped copy: probe.bpf.c checks it. */
#define SHIPPED_VMLINUX_H 1

#pragma clang attribute pop

#endif /* __VMLINUX_H__ */
