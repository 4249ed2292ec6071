// SPDX-License-Identifier: GPL-2.0
/*
 * lab-loader: load any number of BPF objects, attach their programs (from
 * their SEC() names), stream every ring buffer and perf buffer they have as
 * JSON, and dump their maps and globals when stopped.
 *
 *   lab-loader [OPTS] OBJ.bpf.o [[OPTS] OBJ2.bpf.o ...]
 *
 * Options apply to the object that follows them:
 *   -p PROG          attach only this program (repeatable; default: all whose
 *                    autoattach is on)
 *   -s NAME=HEX      before loading, set global variable NAME (in .rodata,
 *                    .data or .bss) to these bytes: how the host sets a tool's
 *                    `const volatile` knobs
 *
 * Protocol:
 *   stdout  one JSON line per record, flushed at once:
 *             {"object":O,"map":M,"kind":"ringbuf"|"perf","data":"<hex>"}
 *             {"object":O,"map":M,"kind":"perf","lost":N,"cpu":C}
 *           and when stopping, one line per map (arrays, hashes and the
 *           global sections; at most DUMP_LIMIT entries each):
 *             {"object":O,"map":M,"kind":"dump","type":T,"key_size":K,
 *              "value_size":V,"cpus":C,"btf_key_type_id":I,
 *              "btf_value_type_id":J,"truncated":B,"entries":[["k","v"],..]}
 *           (per-CPU values hold C slots of V bytes rounded up to 8); a global
 *           section adds "vars":[{"name","type_id","offset","size"},..].
 *   stderr  libbpf's messages (verifier log on failure), then, once every
 *           program is attached, exactly "lab-loader: ready pid=<pid>", and
 *           "lab-loader: detached" after a clean shutdown.
 *   stop    SIGINT, SIGTERM, SIGHUP, or EOF/hangup on stdin.  The remaining
 *           records are drained, the maps dumped, every link and object
 *           destroyed, and the exit status is 0.  Keep stdin open (an ssh
 *           channel, a pipe): with stdin from /dev/null it stops right away.
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
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

/*
 * libbpf 0.8 (bookworm has 1.1) brought what the globals, program choice and the
 * perf-buffer call below use; bullseye's 0.3 predates libbpf_version.h. There the
 * loader still streams buffers and dumps maps, but cannot set globals.
 */
#if defined(LIBBPF_MAJOR_VERSION) && (LIBBPF_MAJOR_VERSION > 0 || LIBBPF_MINOR_VERSION >= 8)
#define LAB_NEW_LIBBPF 1
#else
#define LAB_NEW_LIBBPF 0
#endif

#define MAX_OBJS 64
#define MAX_OPTS 64
#define MAX_BUFS 64
#define DUMP_LIMIT 4096
#define PERF_PAGES 64

struct object_opts {
	const char *path;
	const char *progs[MAX_OPTS];
	int nprogs;
	const char *writes[MAX_OPTS];
	int nwrites;
};

/* What a record callback needs to say where the record came from. */
struct source {
	const char *object;
	const char *map;
};

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

static void put_hex(const void *data, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < size; i++) {
		putchar(hex[p[i] >> 4]);
		putchar(hex[p[i] & 0xf]);
	}
}

static void put_head(const struct source *src, const char *kind)
{
	printf("{\"object\":\"");
	put_json_text(src->object);
	printf("\",\"map\":\"");
	put_json_text(src->map);
	printf("\",\"kind\":\"%s\"", kind);
}

static int end_line(void)
{
	printf("}\n");
	if (fflush(stdout) != 0) {
		stop = 1;	/* nobody reads stdout any more */
		return -EPIPE;
	}
	return 0;
}

static int on_ringbuf_record(void *ctx, void *data, size_t size)
{
	put_head(ctx, "ringbuf");
	printf(",\"data\":\"");
	put_hex(data, size);
	putchar('"');
	return end_line();
}

static void on_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	put_head(ctx, "perf");
	printf(",\"cpu\":%d,\"data\":\"", cpu);
	put_hex(data, size);
	putchar('"');
	end_line();
}

static void on_perf_lost(void *ctx, int cpu, __u64 count)
{
	put_head(ctx, "perf");
	printf(",\"cpu\":%d,\"lost\":%llu", cpu, (unsigned long long)count);
	end_line();
}

/* The user-facing name of a map: a global section's own name (".bss"). */
static const char *map_label(const struct bpf_map *map)
{
	const char *name = bpf_map__name(map);
	const char *dot = strrchr(name, '.');

	return bpf_map__is_internal(map) && dot ? dot : name;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The global section variable `name` lives in: its map and offset (after open). */
static struct bpf_map *find_global(struct bpf_object *obj, const char *name, __u32 *offset,
				   __u32 *size)
{
	const struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *map;

	if (!btf)
		return NULL;
	bpf_object__for_each_map(map, obj) {
		const struct btf_type *t;
		const struct btf_var_secinfo *v;
		int i;

		if (!bpf_map__is_internal(map))
			continue;
		t = btf__type_by_id(btf, bpf_map__btf_value_type_id(map));
		if (!t || !btf_is_datasec(t))
			continue;
		v = btf_var_secinfos(t);
		for (i = 0; i < btf_vlen(t); i++, v++) {
			const struct btf_type *var = btf__type_by_id(btf, v->type);

			if (var && strcmp(btf__name_by_offset(btf, var->name_off), name) == 0) {
				*offset = v->offset;
				*size = v->size;
				return map;
			}
		}
	}
	return NULL;
}

/* -s NAME=HEX: set a global's initial value (a tool's `const volatile` knob). */
static int apply_setting(struct bpf_object *obj, const char *spec)
{
	char name[128];
	const char *eq = strchr(spec, '=');
	const char *hex;
	unsigned char *image;
	struct bpf_map *map;
	__u32 offset, size;
	size_t total, len, i;

	if (!eq || (size_t)(eq - spec) >= sizeof(name))
		goto bad;
	memcpy(name, spec, eq - spec);
	name[eq - spec] = '\0';
	hex = eq + 1;
	len = strlen(hex);
	if (len % 2)
		goto bad;
	map = find_global(obj, name, &offset, &size);
	if (!map) {
		fprintf(stderr, "lab-loader: no global variable %s in this object\n", name);
		return -ENOENT;
	}
#if LAB_NEW_LIBBPF
	image = bpf_map__initial_value(map, &total);
#else
	(void)total;
	image = NULL;
	fprintf(stderr, "lab-loader: this libbpf is too old to set globals (needs 0.8+)\n");
	return -ENOTSUP;
#endif
	if (!image || len / 2 > size || offset + len / 2 > total) {
		fprintf(stderr, "lab-loader: the value for %s does not fit its %u bytes\n", name,
			size);
		return -ERANGE;
	}
	for (i = 0; i < len / 2; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			goto bad;
		image[offset + i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
bad:
	fprintf(stderr, "lab-loader: bad -s %s (expected NAME=HEXBYTES)\n", spec);
	return -EINVAL;
}

static int wanted(const struct object_opts *o, const struct bpf_program *prog)
{
	int i;

	if (o->nprogs == 0)
#if LAB_NEW_LIBBPF
		return bpf_program__autoattach(prog);
#else
		return 1;
#endif
	for (i = 0; i < o->nprogs; i++)
		if (strcmp(o->progs[i], bpf_program__name(prog)) == 0)
			return 1;
	return 0;
}

static const char *map_type_name(enum bpf_map_type type)
{
	switch (type) {
	case BPF_MAP_TYPE_ARRAY: return "array";
	case BPF_MAP_TYPE_PERCPU_ARRAY: return "percpu_array";
	case BPF_MAP_TYPE_HASH: return "hash";
	case BPF_MAP_TYPE_PERCPU_HASH: return "percpu_hash";
	case BPF_MAP_TYPE_LRU_HASH: return "lru_hash";
	case BPF_MAP_TYPE_LRU_PERCPU_HASH: return "lru_percpu_hash";
	default: return NULL;
	}
}

static int is_percpu(enum bpf_map_type type)
{
	return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

/*
 * The variables of a global section with their offsets: the object file's BTF
 * has them as 0 until libbpf fixes them up at load, so the host cannot know.
 */
static void put_section_vars(const struct btf *btf, __u32 type_id)
{
	const struct btf_type *t = btf ? btf__type_by_id(btf, type_id) : NULL;
	const struct btf_var_secinfo *v;
	int i, n;

	printf(",\"vars\":[");
	if (t && btf_is_datasec(t)) {
		v = btf_var_secinfos(t);
		n = btf_vlen(t);
		for (i = 0; i < n; i++, v++) {
			const struct btf_type *var = btf__type_by_id(btf, v->type);

			printf("%s{\"name\":\"", i ? "," : "");
			put_json_text(var ? btf__name_by_offset(btf, var->name_off) : "");
			printf("\",\"type_id\":%u,\"offset\":%u,\"size\":%u}",
			       var ? var->type : 0, v->offset, v->size);
		}
	}
	printf("]");
}

/* One "dump" line for a map whose contents a scenario may check. */
static void dump_map(const char *object, const struct btf *btf, const struct bpf_map *map,
		     int ncpus)
{
	enum bpf_map_type type = bpf_map__type(map);
	const char *type_name = map_type_name(type);
	struct source src = { object, map_label(map) };
	size_t ksize = bpf_map__key_size(map), vsize = bpf_map__value_size(map);
	int cpus = is_percpu(type) ? ncpus : 1;
	size_t vbuf = is_percpu(type) ? ((vsize + 7) / 8 * 8) * ncpus : vsize;
	void *key = NULL, *next = NULL, *value = NULL;
	int fd = bpf_map__fd(map), n = 0, first = 1;

	if (!type_name || fd < 0)
		return;
	key = calloc(1, ksize ? ksize : 1);
	next = calloc(1, ksize ? ksize : 1);
	value = calloc(1, vbuf ? vbuf : 1);
	if (!key || !next || !value)
		goto out;
	put_head(&src, "dump");
	printf(",\"type\":\"%s\",\"key_size\":%zu,\"value_size\":%zu,\"cpus\":%d,"
	       "\"btf_key_type_id\":%u,\"btf_value_type_id\":%u,\"entries\":[",
	       type_name, ksize, vsize, cpus, bpf_map__btf_key_type_id(map),
	       bpf_map__btf_value_type_id(map));
	while (bpf_map_get_next_key(fd, first ? NULL : key, next) == 0) {
		first = 0;
		memcpy(key, next, ksize);
		if (n == DUMP_LIMIT)
			break;
		if (bpf_map_lookup_elem(fd, key, value) != 0)
			continue;
		printf("%s[\"", n ? "," : "");
		put_hex(key, ksize);
		printf("\",\"");
		put_hex(value, vbuf);
		printf("\"]");
		n++;
	}
	printf("],\"truncated\":%s", n == DUMP_LIMIT ? "true" : "false");
	if (bpf_map__is_internal(map))
		put_section_vars(btf, bpf_map__btf_value_type_id(map));
	end_line();
out:
	free(key);
	free(next);
	free(value);
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

static int parse_args(int argc, char **argv, struct object_opts *objs, int *nobjs)
{
	struct object_opts cur = { 0 };
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-p") == 0 || strcmp(argv[i], "-s") == 0) {
			int is_prog = argv[i][1] == 'p';

			if (i + 1 >= argc || (is_prog ? cur.nprogs : cur.nwrites) == MAX_OPTS)
				return -1;
			if (is_prog)
				cur.progs[cur.nprogs++] = argv[++i];
			else
				cur.writes[cur.nwrites++] = argv[++i];
			continue;
		}
		if (argv[i][0] == '-' || *nobjs == MAX_OBJS)
			return -1;
		cur.path = argv[i];
		objs[(*nobjs)++] = cur;
		memset(&cur, 0, sizeof(cur));
	}
	return *nobjs > 0 && cur.nprogs == 0 && cur.nwrites == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	static struct object_opts opts[MAX_OBJS];
	static struct bpf_object *objs[MAX_OBJS];
	static struct source sources[MAX_BUFS];
	static struct perf_buffer *perfs[MAX_BUFS];
	struct bpf_link **links = NULL;
	struct ring_buffer *rb = NULL;
	struct pollfd in = { .fd = STDIN_FILENO, .events = POLLIN };
	struct sigaction sa;
	size_t nlinks = 0, cap = 0;
	int nobjs = 0, nsources = 0, nperfs = 0, ncpus;
	int i, j, err, ret = 0;

	if (parse_args(argc, argv, opts, &nobjs) != 0) {
		fprintf(stderr, "usage: %s [-p PROG]... [-s NAME=HEX]... OBJ.bpf.o "
			"[[OPTS] OBJ2.bpf.o ...]\n", argv[0]);
		return 1;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(print_fn);
	ncpus = libbpf_num_possible_cpus();
	if (ncpus < 1)
		ncpus = 1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;	/* no SA_RESTART: interrupt the poll */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (i = 0; i < nobjs; i++) {
		const char *path = opts[i].path, *name = base_name(path);
		struct bpf_program *prog;
		struct bpf_map *map;

		objs[i] = bpf_object__open_file(path, NULL);
		if (!objs[i]) {
			err = -errno;
			fprintf(stderr, "lab-loader: failed to open %s: %s\n", path, strerror(-err));
			ret = 2;
			goto cleanup;
		}
		for (j = 0; j < opts[i].nwrites; j++) {
			if (apply_setting(objs[i], opts[i].writes[j]) != 0) {
				ret = 2;
				goto cleanup;
			}
		}
		for (j = 0; j < opts[i].nprogs; j++) {
			if (!bpf_object__find_program_by_name(objs[i], opts[i].progs[j])) {
				fprintf(stderr, "lab-loader: %s has no program named %s\n", path,
					opts[i].progs[j]);
				ret = 2;
				goto cleanup;
			}
		}
		err = bpf_object__load(objs[i]);
		if (err) {
			fprintf(stderr, "lab-loader: failed to load %s: %s\n", path, strerror(-err));
			ret = 2;
			goto cleanup;
		}

		bpf_object__for_each_program(prog, objs[i]) {
			struct bpf_link *link;

			if (!bpf_program__autoload(prog) || !wanted(&opts[i], prog))
				continue;
			link = bpf_program__attach(prog);
			if (!link) {
				const char *sec = bpf_program__section_name(prog);
				const char *fn = strchr(sec, '/');

				/* Name the kernel function: "busy" alone does not say
				 * which target is not traceable. */
				err = -errno;
				fprintf(stderr, "lab-loader: failed to attach program %s "
					"(%s) to function %s in %s: %s%s\n",
					bpf_program__name(prog), sec, fn ? fn + 1 : "?", path,
					strerror(-err), err == -EBUSY || err == -ENOENT || err == -EINVAL ?
					" (is the function present and traceable? see "
					"available_filter_functions)" : "");
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

		bpf_object__for_each_map(map, objs[i]) {
			enum bpf_map_type type = bpf_map__type(map);
			struct source *src;

			if (type != BPF_MAP_TYPE_RINGBUF && type != BPF_MAP_TYPE_PERF_EVENT_ARRAY)
				continue;
			if (nsources == MAX_BUFS) {
				fprintf(stderr, "lab-loader: more than %d buffers\n", MAX_BUFS);
				ret = 2;
				goto cleanup;
			}
			src = &sources[nsources++];
			src->object = name;	/* points into argv, which outlives the buffers */
			src->map = bpf_map__name(map);
			if (type == BPF_MAP_TYPE_RINGBUF) {
				if (!rb) {
					rb = ring_buffer__new(bpf_map__fd(map), on_ringbuf_record, src,
							      NULL);
					err = rb ? 0 : -errno;
				} else {
					err = ring_buffer__add(rb, bpf_map__fd(map), on_ringbuf_record,
							       src);
				}
			} else {
#if LAB_NEW_LIBBPF
				perfs[nperfs] = perf_buffer__new(bpf_map__fd(map), PERF_PAGES,
								 on_perf_sample, on_perf_lost, src,
								 NULL);
#else
				{
					struct perf_buffer_opts pb = { .sample_cb = on_perf_sample,
								       .lost_cb = on_perf_lost,
								       .ctx = src };

					perfs[nperfs] = perf_buffer__new(bpf_map__fd(map), PERF_PAGES,
									 &pb);
				}
#endif
				err = perfs[nperfs] ? 0 : -errno;
				if (!err)
					nperfs++;
			}
			if (err) {
				fprintf(stderr, "lab-loader: failed to open buffer %s of %s: %s\n",
					src->map, path, strerror(-err));
				ret = 2;
				goto cleanup;
			}
		}
	}

	fprintf(stderr, "lab-loader: ready pid=%d\n", (int)getpid());
	fflush(stderr);

	while (!stop) {
		int wait_ms = 100;

		if (rb) {
			err = ring_buffer__poll(rb, nperfs ? 20 : wait_ms);
			if (err < 0 && err != -EINTR && !stop) {
				fprintf(stderr, "lab-loader: polling ring buffers: %s\n",
					strerror(-err));
				break;
			}
			wait_ms = 0;
		}
		for (j = 0; j < nperfs; j++) {
			err = perf_buffer__poll(perfs[j], rb || j ? 0 : 20);
			if (err < 0 && err != -EINTR && !stop) {
				fprintf(stderr, "lab-loader: polling perf buffers: %s\n",
					strerror(-err));
				stop = 1;
			}
			wait_ms = 0;
		}
		if (stdin_closed(&in, wait_ms))
			break;
	}

	/* Drain what the programs wrote before the links go, then dump the maps. */
	if (rb)
		ring_buffer__consume(rb);
	for (j = 0; j < nperfs; j++)
		perf_buffer__consume(perfs[j]);
	for (i = 0; i < nobjs; i++) {
		struct bpf_map *map;

		bpf_object__for_each_map(map, objs[i])
			dump_map(base_name(opts[i].path), bpf_object__btf(objs[i]), map, ncpus);
	}

cleanup:
	ring_buffer__free(rb);
	for (j = 0; j < nperfs; j++)
		perf_buffer__free(perfs[j]);
	while (nlinks > 0)
		bpf_link__destroy(links[--nlinks]);
	for (i = 0; i < nobjs; i++)
		bpf_object__close(objs[i]);
	free(links);
	if (ret == 0) {
		fprintf(stderr, "lab-loader: detached\n");
		fflush(stderr);
	}
	return ret;
}
