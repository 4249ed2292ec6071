// SPDX-License-Identifier: GPL-2.0
/*
 * The own_loader tool's user space: open the skeleton, set min_uid from argv,
 * load, attach, print one line per call until SIGINT.
 *
 *   own_loader [MIN_UID]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <bpf/libbpf.h>
#include "own_loader.skel.h"

struct call {
	unsigned int uid;
	int ret;
	char name[32];
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int on_call(void *ctx, void *data, size_t size)
{
	const struct call *c = data;

	(void)ctx;
	if (size < sizeof(*c))
		return 0;
	printf("uid=%u ret=%d name=%s\n", c->uid, c->ret, c->name);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct own_loader *skel;
	struct ring_buffer *rb = NULL;
	int err;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	skel = own_loader__open();
	if (!skel) {
		fprintf(stderr, "own_loader: open failed\n");
		return 1;
	}
	if (argc > 1)
		skel->rodata->min_uid = (unsigned int)strtoul(argv[1], NULL, 10);
	err = own_loader__load(skel);
	if (!err)
		err = own_loader__attach(skel);
	if (!err) {
		rb = ring_buffer__new(bpf_map__fd(skel->maps.calls), on_call, NULL, NULL);
		err = rb ? 0 : -1;
	}
	if (err) {
		fprintf(stderr, "own_loader: load/attach failed: %d\n", err);
		own_loader__destroy(skel);
		return 1;
	}
	printf("own_loader: tracing do_set_acl (min_uid=%u)\n", skel->rodata->min_uid);
	fflush(stdout);
	while (!stop)
		ring_buffer__poll(rb, 100);
	ring_buffer__consume(rb);
	ring_buffer__free(rb);
	own_loader__destroy(skel);
	return 0;
}
