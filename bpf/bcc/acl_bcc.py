#!/usr/bin/env python3
"""The do_set_acl fentry/fexit probes of bpf/acl, written for BCC instead of libbpf.

Runs in the guest with python3-bpfcc (``from bcc import BPF``), as root::

    python3 acl_bcc.py

BCC compiles the C below at run time against the running kernel's headers
(linux-headers-$(uname -r), or the kernel's built-in kheaders), and attaches
``KFUNC_PROBE`` / ``KRETFUNC_PROBE`` programs, which are fentry / fexit
programs. They print the same trace_pipe lines as bpf/acl/fentry.bpf.c and
bpf/acl/fexit.bpf.c and send the same ``struct event`` through a ring buffer
named ``events``.

It speaks lab-loader's protocol, except that stdout carries decoded events:

* stdout: one JSON line per event, flushed at once:
  ``{"object":"acl_bcc.py","event":{"probe":"fexit","function":"do_set_acl",...}}``
  (``retval`` is left out of fentry events: fentry has no return value);
* stderr: ``lab-loader: ready pid=<pid>`` once both probes are attached, and
  ``lab-loader: detached`` after a clean shutdown;
* stops on SIGINT, SIGTERM, SIGHUP, or EOF/hangup on stdin, then drains the
  ring buffer, detaches and exits 0;
* exit status 2 when compiling or loading fails, 3 when attaching fails.
"""

from __future__ import annotations

import ctypes as ct
import json
import os
import select
import signal
import sys
from types import FrameType
from typing import Any

OBJECT_NAME = "acl_bcc.py"
POLL_TIMEOUT_MS = 100

# The BPF side. A raw string, so that C sees "\n" as an escape sequence.
# BCC warns "cannot use several %s conversion specifiers" on the two printk
# calls: that limit went away in Linux 5.13 (the libbpf programs print the same
# two strings through the same bpf_trace_printk helper), so the warning is moot.
BPF_TEXT = r"""
#include <linux/sched.h>
#include <linux/fs.h>
#include <linux/dcache.h>

struct mnt_idmap;

/* Same layout as bpf/acl/acl_event.h. */
struct event {
    char probe[8];
    char function[32];
    char comm[16];
    u32 pid;
    u32 uid;
    s32 retval;
    char dentry[64];
    char acl_name[64];
    u64 ts_ns;
};

BPF_RINGBUF_OUTPUT(events, 64);     /* 64 pages: 256 KiB */

/* Reads the names the way the tutorial's programs do; 0 on success. */
static __always_inline int read_names(struct dentry *dentry, const char *acl_name,
                                      char *dname, char *acl)
{
    const unsigned char *name_ptr = NULL;

    if (acl_name) {
        if (bpf_probe_read_kernel_str(acl, 64, acl_name) < 0)
            return -1;
    }
    bpf_probe_read_kernel(&name_ptr, sizeof(name_ptr), &dentry->d_name.name);
    if (name_ptr) {
        if (bpf_probe_read_kernel_str(dname, 64, name_ptr) < 0)
            return -1;
    }
    return 0;
}

static __always_inline void fill_event(struct event *e, const char *dname,
                                       const char *acl, s32 retval)
{
    __builtin_memset(e, 0, sizeof(*e));
    __builtin_memcpy(e->function, "do_set_acl", sizeof("do_set_acl"));
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->retval = retval;
    __builtin_memcpy(e->dentry, dname, sizeof(e->dentry));
    __builtin_memcpy(e->acl_name, acl, sizeof(e->acl_name));
    e->ts_ns = bpf_ktime_get_ns();
}

KFUNC_PROBE(do_set_acl, struct mnt_idmap *idmap, struct dentry *dentry,
            const char *acl_name, const void *kvalue, size_t size)
{
    char acl[64] = {};
    char dname[64] = {};
    struct event *e;

    if (read_names(dentry, acl_name, dname, acl) < 0)
        return 0;

    bpf_trace_printk("do_set_acl: dentry=%s, acl_name=%s\n", dname, acl);

    e = events.ringbuf_reserve(sizeof(struct event));
    if (!e)
        return 0;
    fill_event(e, dname, acl, 0);
    __builtin_memcpy(e->probe, "fentry", sizeof("fentry"));
    events.ringbuf_submit(e, 0);
    return 0;
}

KRETFUNC_PROBE(do_set_acl, struct mnt_idmap *idmap, struct dentry *dentry,
               const char *acl_name, const void *kvalue, size_t size, int ret)
{
    char acl[64] = {};
    char dname[64] = {};
    struct event *e;

    if (read_names(dentry, acl_name, dname, acl) < 0)
        return 0;

    bpf_trace_printk("do_set_acl: dentry=%s, acl_name=%s, retval=%d\n", dname, acl, ret);

    e = events.ringbuf_reserve(sizeof(struct event));
    if (!e)
        return 0;
    fill_event(e, dname, acl, ret);
    __builtin_memcpy(e->probe, "fexit", sizeof("fexit"));
    events.ringbuf_submit(e, 0);
    return 0;
}
"""


class Event(ct.Structure):
    """struct event, as in bpf/acl/acl_event.h (ctypes adds the same padding)."""

    _fields_ = (
        ("probe", ct.c_char * 8),
        ("function", ct.c_char * 32),
        ("comm", ct.c_char * 16),
        ("pid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("retval", ct.c_int32),
        ("dentry", ct.c_char * 64),
        ("acl_name", ct.c_char * 64),
        ("ts_ns", ct.c_uint64),
    )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def event_fields(ev: Event) -> dict[str, object]:
    fields: dict[str, object] = {
        "probe": _text(ev.probe),
        "function": _text(ev.function),
        "comm": _text(ev.comm),
        "pid": ev.pid,
        "uid": ev.uid,
        "retval": ev.retval,
        "dentry": _text(ev.dentry),
        "acl_name": _text(ev.acl_name),
        "ts_ns": ev.ts_ns,
    }
    if fields["probe"] != "fexit":
        del fields["retval"]
    return fields


class Runner:
    def __init__(self) -> None:
        self.stop = False
        self.stdin = select.poll()
        self.stdin.register(0, select.POLLIN)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True

    def on_event(self, ctx: Any, data: Any, size: int) -> int:
        if size < ct.sizeof(Event):
            return 0
        ev = ct.cast(data, ct.POINTER(Event)).contents
        line = json.dumps({"object": OBJECT_NAME, "event": event_fields(ev)}, separators=(",", ":"))
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads stdout any more: stop, and keep the final flush quiet.
            self.stop = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 0

    def stdin_closed(self) -> bool:
        """True once stdin reports EOF or hangup; unread input is discarded."""
        for fd, revents in self.stdin.poll(0):
            if revents & select.POLLNVAL:
                self.stdin.unregister(fd)  # stdin is not open: nothing to watch
                return False
            if revents & select.POLLIN:
                try:
                    return os.read(fd, 4096) == b""
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    return True
            if revents & (select.POLLHUP | select.POLLERR):
                return True
        return False


def fail(code: int, message: str) -> int:
    print(f"lab-loader: failed to load {OBJECT_NAME}: {message}", file=sys.stderr, flush=True)
    return code


def main() -> int:
    runner = Runner()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, runner.on_signal)

    try:
        from bcc import BPF
    except ImportError as exc:
        return fail(2, f"{exc} (install python3-bpfcc)")

    if not BPF.support_kfunc():
        return fail(2, "this kernel does not support fentry/fexit (kfunc) programs")
    try:
        # Compiles, loads and auto-attaches the kfunc__/kretfunc__ programs.
        bpf = BPF(text=BPF_TEXT)
    except Exception as exc:
        code = 3 if "attach" in str(exc).lower() else 2
        return fail(code, str(exc))

    try:
        bpf["events"].open_ring_buffer(runner.on_event)
        print(f"lab-loader: ready pid={os.getpid()}", file=sys.stderr, flush=True)
        while not runner.stop:
            bpf.ring_buffer_poll(POLL_TIMEOUT_MS)
            if runner.stdin_closed():
                break
        bpf.ring_buffer_consume()
    finally:
        bpf.cleanup()
    print("lab-loader: detached", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
