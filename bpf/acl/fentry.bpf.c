// SPDX-License-Identifier: GPL-2.0
/*
 * fentry probe on do_set_acl(): the tutorial's program, unchanged in what it
 * prints to trace_pipe, plus one structured record per hit in the "events"
 * ring buffer (layout in acl_event.h).
 */
#ifndef __TARGET_ARCH_x86
#define __TARGET_ARCH_x86
#endif
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "acl_event.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/*
 * Never used by the program: a global of type struct event makes clang put
 * the record layout into the object's BTF, where the lab's host-side decoder
 * (lab/btf_events.py, fed by "bpftool -j btf dump file") reads it.
 */
static struct event event_layout __attribute__((used));

SEC("fentry/do_set_acl")
int BPF_PROG(handle_do_set_acl,
             struct mnt_idmap *idmap,
             struct dentry *dentry,
             const char *acl_name,
             const void *kvalue,
             size_t size)
{
    char acl[64] = {};
    char dname[64] = {};
    struct event *e;

    if (acl_name) {
        if (bpf_probe_read_kernel_str(acl, sizeof(acl), acl_name) < 0)
            return 0;
    }

    const char *name_ptr = (const char *)BPF_CORE_READ(dentry, d_name.name);
    if (name_ptr) {
        if (bpf_probe_read_kernel_str(dname, sizeof(dname), name_ptr) < 0)
            return 0;
    }

    bpf_printk("do_set_acl: dentry=%s, acl_name=%s\n",
               dname, acl);

    /* Structured copy of the same information for the lab. */
    e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    __builtin_memset(e, 0, sizeof(*e));
    __builtin_memcpy(e->probe, "fentry", sizeof("fentry"));
    __builtin_memcpy(e->function, "do_set_acl", sizeof("do_set_acl"));
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->uid = (__u32)bpf_get_current_uid_gid();
    e->retval = 0; /* fentry runs before the function: no return value yet */
    __builtin_memcpy(e->dentry, dname, sizeof(e->dentry));
    __builtin_memcpy(e->acl_name, acl, sizeof(e->acl_name));
    e->ts_ns = bpf_ktime_get_ns();
    bpf_ringbuf_submit(e, 0);
    return 0;
}
