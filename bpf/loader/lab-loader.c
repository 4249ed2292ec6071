// SPDX-License-Identifier: GPL-2.0
/*
 * lab-loader: load any number of BPF objects, attach all of their programs
 * (from their SEC() names) and stream their "events" ring buffers as JSON.
 *
 *   lab-loader OBJ.bpf.o [OBJ2.bpf.o ...]
 *
 * Protocol:
 *   stdout  one line per ring-buffer record, flushed at once:
 *             {"object":"<basename of OBJ>","data":"<lowercase hex of the record>"}
 *           only maps named "events" of type BPF_MAP_TYPE_RINGBUF are read; an
 *           object without one is fine (it just produces no records).
 *   stderr  libbpf's messages (verifier log on failure), then, once every
 *           program is attached, exactly "lab-loader: ready pid=<pid>", and
 *           "lab-loader: detached" after a clean shutdown.
 *   stop    SIGINT, SIGTERM, SIGHUP, or EOF/hangup on stdin.  The remaining
 *           records are drained, every link and object is destroyed, and the
 *           exit status is 0.  Keep stdin open (an ssh channel, a pipe):
 *           with stdin from /dev/null the loader stops right away.
 *   exit    0 ok, 1 usage, 2 an object failed to open or load,
 *           3 a program failed to attach.
 *   LAB_LOADER_DEBUG=1 in the environment adds libbpf's debug messages.
 *
 * Build: cc -O2 -Wall -Wextra lab-loader.c -lbpf -lelf -lz -o lab-loader
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#define EVENTS_MAP "events"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG && !getenv("LAB_LOADER_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Write s as the body of a JSON string (without the quotes). */
static void put_json_text(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
}

/* ring_buffer sample callback; ctx is the object's base name. */
static int on_record(void *ctx, void *data, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = data;
	size_t i;

	printf("{\"object\":\"");
	put_json_text(ctx);
	printf("\",\"data\":\"");
	for (i = 0; i < size; i++) {
		putchar(hex[p[i] >> 4]);
		putchar(hex[p[i] & 0xf]);
	}
	printf("\"}\n");
	if (fflush(stdout) != 0) {
		stop = 1;	/* nobody reads stdout any more */
		return -EPIPE;
	}
	return 0;
}

/* Returns 1 once stdin reports EOF or hangup; unread input is discarded. */
static int stdin_closed(struct pollfd *pfd, int timeout_ms)
{
	char buf[256];
	ssize_t n;

	if (pfd->fd < 0) {	/* stdin is not open: nothing to watch */
		if (timeout_ms > 0)
			poll(NULL, 0, timeout_ms);
		return 0;
	}
	if (poll(pfd, 1, timeout_ms) <= 0)
		return 0;
	if (pfd->revents & POLLNVAL) {
		pfd->fd = -1;
		return 0;
	}
	if (pfd->revents & POLLIN) {
		n = read(pfd->fd, buf, sizeof(buf));
		if (n == 0)
			return 1;
		if (n > 0 || errno == EINTR || errno == EAGAIN)
			return 0;
		return 1;
	}
	return (pfd->revents & (POLLHUP | POLLERR)) != 0;
}

int main(int argc, char **argv)
{
	struct bpf_object **objs = NULL;
	struct bpf_link **links = NULL;
	struct ring_buffer *rb = NULL;
	struct pollfd in = { .fd = STDIN_FILENO, .events = POLLIN };
	struct sigaction sa;
	size_t nlinks = 0, cap = 0;
	int i, err, ret = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s OBJ.bpf.o [OBJ2.bpf.o ...]\n", argv[0]);
		return 1;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(print_fn);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;	/* no SA_RESTART: interrupt the poll */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	objs = calloc(argc, sizeof(*objs));
	if (!objs) {
		perror("lab-loader");
		return 1;
	}

	for (i = 1; i < argc; i++) {
		const char *name = base_name(argv[i]);
		struct bpf_program *prog;
		struct bpf_map *map;

		objs[i] = bpf_object__open_file(argv[i], NULL);
		if (!objs[i]) {
			err = -errno;
			fprintf(stderr, "lab-loader: failed to load %s: %s\n", argv[i],
				strerror(-err));
			ret = 2;
			goto cleanup;
		}
		err = bpf_object__load(objs[i]);
		if (err) {
			fprintf(stderr, "lab-loader: failed to load %s: %s\n", argv[i],
				strerror(-err));
			ret = 2;
			goto cleanup;
		}

		bpf_object__for_each_program(prog, objs[i]) {
			struct bpf_link *link;

			if (!bpf_program__autoload(prog))
				continue;
			link = bpf_program__attach(prog);
			if (!link) {
				const char *sec = bpf_program__section_name(prog);
				const char *fn = strchr(sec, '/');

				err = -errno;
				/* Name the kernel function: "busy" alone does not say
				 * which target is not traceable. */
				fprintf(stderr, "lab-loader: failed to attach program %s "
					"(%s) to function %s in %s: %s\n",
					bpf_program__name(prog), sec, fn ? fn + 1 : "?",
					argv[i], strerror(-err));
				ret = 3;
				goto cleanup;
			}
			if (nlinks == cap) {
				struct bpf_link **grown;

				cap = cap ? cap * 2 : 8;
				grown = realloc(links, cap * sizeof(*links));
				if (!grown) {
					bpf_link__destroy(link);
					perror("lab-loader");
					ret = 1;
					goto cleanup;
				}
				links = grown;
			}
			links[nlinks++] = link;
		}

		map = bpf_object__find_map_by_name(objs[i], EVENTS_MAP);
		if (!map || bpf_map__type(map) != BPF_MAP_TYPE_RINGBUF)
			continue;
		/* name points into argv, which outlives the ring buffer */
		if (!rb) {
			rb = ring_buffer__new(bpf_map__fd(map), on_record, (void *)name, NULL);
			err = rb ? 0 : -errno;
		} else {
			err = ring_buffer__add(rb, bpf_map__fd(map), on_record, (void *)name);
		}
		if (err) {
			fprintf(stderr, "lab-loader: failed to open ring buffer of %s: %s\n",
				argv[i], strerror(-err));
			ret = 2;
			goto cleanup;
		}
	}

	fprintf(stderr, "lab-loader: ready pid=%d\n", (int)getpid());
	fflush(stderr);

	while (!stop) {
		if (rb) {
			err = ring_buffer__poll(rb, 100);
			if (err < 0 && err != -EINTR && !stop) {
				fprintf(stderr, "lab-loader: polling ring buffer: %s\n",
					strerror(-err));
				break;
			}
			if (stdin_closed(&in, 0))
				break;
		} else if (stdin_closed(&in, 100)) {
			break;
		}
	}

	if (rb)
		ring_buffer__consume(rb);

cleanup:
	ring_buffer__free(rb);
	while (nlinks > 0)
		bpf_link__destroy(links[--nlinks]);
	for (i = 1; i < argc; i++)
		bpf_object__close(objs[i]);
	free(links);
	free(objs);
	if (ret == 0) {
		fprintf(stderr, "lab-loader: detached\n");
		fflush(stderr);
	}
	return ret;
}
