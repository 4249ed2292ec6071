// SPDX-License-Identifier: GPL-2.0
/*
 * A probe the verifier must reject, kept to show (and test) what the lab reports then:
 * the map lookup may return NULL and the program dereferences it without a check.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("fentry/do_set_acl")
int BPF_PROG(count_unchecked)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&counts, &key);

	*value += 1; /* no NULL check: "invalid mem access 'map_value_or_null'" */
	return 0;
}
