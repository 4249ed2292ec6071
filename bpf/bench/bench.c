// SPDX-License-Identifier: GPL-2.0
// Probe-cost benchmark, guest side: attach one mode to FUNC, pin to one CPU, call FUNC
// in a tight loop (the getpgid syscall or prctl(PR_SET_NAME) -> __set_task_comm), the way
// the kernel's BPF selftests bench does, and print one JSON line with the calls per sample
// and the hits each attached program counted.
//
//   bench FUNC TRIGGER MODE SAMPLES SAMPLE_MS WARMUP_MS
//   TRIGGER: getpgid | comm      MODE: base fentry fexit fentry+fexit kprobe kretprobe
//                                      kprobe-multi raw-tp
// Exit: 0 measured, 3 mode not available on this kernel (reason in the JSON), 1 error.
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "probes.skel.h"

enum { FENTRY, FEXIT, KPROBE, KRETPROBE, KPROBE_MULTI, RAW_TP, SLOTS };
static const char *slot_names[SLOTS] = {"fentry", "fexit", "kprobe", "kretprobe",
					 "kprobe-multi", "raw-tp"};
static char libbpf_log[4096];
static size_t libbpf_log_len;

static int log_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG || libbpf_log_len >= sizeof(libbpf_log) - 1)
		return 0;
	libbpf_log_len += vsnprintf(libbpf_log + libbpf_log_len,
				    sizeof(libbpf_log) - libbpf_log_len, fmt, args);
	if (libbpf_log_len > sizeof(libbpf_log) - 1)
		libbpf_log_len = sizeof(libbpf_log) - 1;
	return 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static int skip(const char *mode, const char *why, int err)
{
	char reason[512];

	snprintf(reason, sizeof(reason), "%s: %s", why, strerror(err < 0 ? -err : err));
	printf("{\"mode\":");
	json_str(mode);
	printf(",\"status\":\"skipped\",\"reason\":");
	json_str(reason);
	printf(",\"log\":");
	json_str(libbpf_log);
	printf("}\n");
	return 3;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int comm_trigger;

static inline void trigger_once(void)
{
	if (comm_trigger)
		prctl(PR_SET_NAME, "bench", 0, 0, 0);
	else
		syscall(SYS_getpgid, 0);
}

/* Call the trigger for about `ms` milliseconds; returns calls, sets *elapsed. */
static unsigned long long run_for(double ms, double *elapsed)
{
	double start = now_ns(), end = start + ms * 1e6, t = start;
	unsigned long long calls = 0;

	while (t < end) {
		for (int i = 0; i < 1000; i++)
			trigger_once();
		calls += 1000;
		t = now_ns();
	}
	*elapsed = t - start;
	return calls;
}

int main(int argc, char **argv)
{
	struct bpf_link *links[2] = {};
	bool use[SLOTS] = {};
	struct probes *skel;
	cpu_set_t cpus;
	int err, nlinks = 0;

	if (argc != 7) {
		fprintf(stderr, "usage: bench FUNC TRIGGER MODE SAMPLES SAMPLE_MS WARMUP_MS\n");
		return 1;
	}
	const char *func = argv[1], *mode = argv[3];
	int samples = atoi(argv[4]);
	double sample_ms = atof(argv[5]), warmup_ms = atof(argv[6]);

	comm_trigger = strcmp(argv[2], "comm") == 0;
	if (!strcmp(mode, "fentry")) use[FENTRY] = true;
	else if (!strcmp(mode, "fexit")) use[FEXIT] = true;
	else if (!strcmp(mode, "fentry+fexit")) use[FENTRY] = use[FEXIT] = true;
	else if (!strcmp(mode, "kprobe")) use[KPROBE] = true;
	else if (!strcmp(mode, "kretprobe")) use[KRETPROBE] = true;
	else if (!strcmp(mode, "kprobe-multi")) use[KPROBE_MULTI] = true;
	else if (!strcmp(mode, "raw-tp")) use[RAW_TP] = true;
	else if (strcmp(mode, "base")) {
		fprintf(stderr, "bench: unknown mode %s\n", mode);
		return 1;
	}

	/* The last CPU: the lab's own work (sshd, the shell) tends to land on CPU 0. */
	CPU_ZERO(&cpus);
	CPU_SET(sysconf(_SC_NPROCESSORS_ONLN) - 1, &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus))
		perror("bench: sched_setaffinity");

	libbpf_set_print(log_fn);
	skel = probes__open();
	if (!skel)
		return skip(mode, "could not open the BPF object", errno);
	skel->rodata->target_tgid = getpid();
	skel->rodata->target_syscall = comm_trigger ? SYS_prctl : SYS_getpgid;
	struct bpf_program *progs[SLOTS] = {
		skel->progs.bench_fentry, skel->progs.bench_fexit, skel->progs.bench_kprobe,
		skel->progs.bench_kretprobe, skel->progs.bench_kprobe_multi,
		skel->progs.bench_raw_tp,
	};
	for (int s = 0; s < SLOTS; s++)
		bpf_program__set_autoload(progs[s], use[s]);
	bpf_program__set_attach_target(progs[FENTRY], 0, func);
	bpf_program__set_attach_target(progs[FEXIT], 0, func);
	err = probes__load(skel);
	if (err)
		return skip(mode, "the kernel refused to load the program", err);

	for (int s = 0; s < SLOTS; s++) {
		struct bpf_link *link = NULL;

		if (!use[s])
			continue;
		if (s == KPROBE || s == KRETPROBE) {
			link = bpf_program__attach_kprobe(progs[s], s == KRETPROBE, func);
		} else if (s == KPROBE_MULTI) {
			LIBBPF_OPTS(bpf_kprobe_multi_opts, opts, .syms = &func, .cnt = 1);
			link = bpf_program__attach_kprobe_multi_opts(progs[s], NULL, &opts);
		} else {
			link = bpf_program__attach(progs[s]);
		}
		if (!link)
			return skip(mode, "attaching failed", errno);
		links[nlinks++] = link;
	}

	double elapsed, warm_elapsed;
	unsigned long long total = run_for(warmup_ms, &warm_elapsed);

	printf("{\"mode\":");
	json_str(mode);
	printf(",\"status\":\"measured\",\"function\":");
	json_str(func);
	printf(",\"trigger\":\"%s\",\"samples\":[", comm_trigger ? "comm" : "getpgid");
	for (int i = 0; i < samples; i++) {
		unsigned long long calls = run_for(sample_ms, &elapsed);

		total += calls;
		printf("%s{\"calls\":%llu,\"ns\":%.0f}", i ? "," : "", calls, elapsed);
	}
	printf("],\"calls\":%llu,\"hits\":{", total);

	int ncpus = libbpf_num_possible_cpus(), first = 1;
	unsigned long long *values = calloc(ncpus, sizeof(*values));

	for (__u32 s = 0; s < SLOTS && values; s++) {
		unsigned long long sum = 0;

		if (!use[s])
			continue;
		if (!bpf_map__lookup_elem(skel->maps.hits, &s, sizeof(s), values,
					  ncpus * sizeof(*values), 0))
			for (int c = 0; c < ncpus; c++)
				sum += values[c];
		printf("%s\"%s\":%llu", first ? "" : ",", slot_names[s], sum);
		first = 0;
	}
	printf("}}\n");
	free(values);
	for (int i = 0; i < nlinks; i++)
		bpf_link__destroy(links[i]);
	probes__destroy(skel);
	return 0;
}
