"""The typed guest-helper client: replies become dataclasses, failures LabFailure messages."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, cast

import pytest

from lab.errors import LabFailure
from lab.run.guest import Facts, GuestHelper, StaticCache, helper_digest, prune_static
from lab.ssh import CommandResult, Session

KERNEL = {"release": "6.12.1", "version": [6, 12, 1], "btf": True,
          "build_id_running": "aa", "build_id_debug_vmlinux": "aa", "uname": "Linux"}


class FakeTransport:
    def is_active(self) -> bool:
        return True


class FakeChannel:
    """The helper's `serve` channel: a ready line, then one canned line per request."""

    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.out = bytearray(b'{"ready": 4242}\n')
        self.err = bytearray()
        self.closed = self.eof_received = False
        self._idle = os.pipe()  # select() needs a descriptor; nothing is ever written to it

    def sendall(self, data: bytes) -> None:
        self.session.requests.append(json.loads(data))
        if self.session.lines:
            self.out += self.session.lines.pop(0) + b"\n"
        else:
            self.err += self.session.err
            self.eof_received = self.session.exits

    def fileno(self) -> int:
        return self._idle[0]

    def recv_ready(self) -> bool:
        return bool(self.out)

    def recv(self, size: int) -> bytes:
        data, self.out[:] = bytes(self.out[:size]), self.out[size:]
        return data

    def recv_stderr_ready(self) -> bool:
        return bool(self.err)

    def recv_stderr(self, size: int) -> bytes:
        data, self.err[:] = bytes(self.err[:size]), self.err[size:]
        return data

    def exit_status_ready(self) -> bool:
        return self.eof_received

    def get_transport(self) -> FakeTransport:
        return FakeTransport()

    def shutdown_write(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        for fd in self._idle:
            with contextlib.suppress(OSError):
                os.close(fd)


class FakeSession:
    """Replies: one line per request; when they run out, the helper prints `err` and
    exits (`exits`), or says nothing more (a request that hangs)."""

    def __init__(self, *lines: bytes, err: bytes = b"", exits: bool = True) -> None:
        self.lines = list(lines)
        self.err, self.exits = err, exits
        self.requests: list[Any] = []
        self.commands: list[str] = []
        self.killed: list[Any] = []

    def open_channel(self, command: str) -> FakeChannel:
        self.commands.append(command)
        return FakeChannel(self)

    def run(self, argv: Any, *, timeout: float) -> CommandResult:
        self.killed.append(argv)
        return CommandResult("kill", 0, b"", b"", 0.1, False)


def replied(doc: object) -> bytes:
    return json.dumps({"reply": doc}).encode()


def helper(session: FakeSession) -> GuestHelper:
    return GuestHelper(cast(Session, session))


def test_prepare_reply_is_typed() -> None:
    reply = {"kernel": KERNEL, "traceable": {"do_set_acl": True},
             "in_kallsyms": {"do_set_acl": True}, "live_before": {"do_set_acl": {}},
             "objdump": {"do_set_acl": "listing"}, "bpftrace_lv": {},
             "build": {"ok": True, "log": "", "cached": False}}
    session = FakeSession(replied(reply))
    facts = helper(session).prepare({"functions": ["do_set_acl"]})
    assert isinstance(facts, Facts)
    assert facts.kernel.version == (6, 12, 1) and facts.kernel.raw["uname"] == "Linux"
    assert facts.build.cached is False and facts.objdump == {"do_set_acl": "listing"}
    assert session.requests == [{"command": "prepare",
                                 "request": {"functions": ["do_set_acl"]}}]


def test_finish_reply_is_typed() -> None:
    session = FakeSession(replied({"live": {"f": {"bytes": "90"}}, "trace": ["a", "b"]}))
    reply = helper(session).finish(["f"])
    assert reply.trace == ("a", "b") and reply.live == {"f": {"bytes": "90"}}


def test_one_helper_process_answers_the_whole_run() -> None:
    session = FakeSession(replied({"live": {}}), replied({"live": {}, "trace": []}))
    known = {"f": {"address": "0x10", "end": "0x40", "thunk": None}}
    with helper(session) as guest:
        guest.peek(["f"], known)
        guest.finish(["f"])
        assert guest._pid == 4242
    # -S: stdlib only, no site-packages to scan at start; exec: its pid is the command's
    assert session.commands == ["exec python3 -S /opt/fentry-lab/src/guest/fentry_lab_guest.py "
                                "serve"]
    assert [r["request"] for r in session.requests] == [{"live": ["f"], "known": known},
                                                        {"live": ["f"], "known": {}}]


def test_full_guest_disk_is_named_with_the_fix() -> None:
    error = json.dumps({"error": "fentry-lab-guest: No space left on device (the root disk is "
                                 "full): /var/cache/x"}).encode()
    with pytest.raises(LabFailure, match=r"the guest's disk is full .* Fix: `invoke "
                                         r"lab.destroy && invoke lab.up`"):
        helper(FakeSession(error)).peek(["f"])
    # A helper that could not even start on a full disk says so on stderr.
    with pytest.raises(LabFailure, match="the guest's disk is full"):
        helper(FakeSession(err=b"OSError: No space left on device\n")).peek(["f"])


def test_a_broken_reply_is_a_lab_failure() -> None:
    with pytest.raises(LabFailure, match="answered peek with something that is not JSON"):
        helper(FakeSession(b"Traceback (most recent call last):")).peek(["f"])
    with pytest.raises(LabFailure, match="reply lacks 'kernel'"):
        helper(FakeSession(replied({}))).facts({})
    with pytest.raises(LabFailure, match=r"guest helper failed \(peek\): boom"):
        helper(FakeSession(err=b"boom\n")).peek(["f"])
    with pytest.raises(LabFailure, match=r"guest helper failed \(peek\): it exited without"):
        helper(FakeSession()).peek(["f"])


def test_a_request_past_its_deadline_kills_the_helper_group() -> None:
    session = FakeSession(exits=False)
    with pytest.raises(LabFailure, match=r"\(prepare, timed out after 1 s\)"):
        helper(session).prepare({}, timeout=1)
    assert session.killed == [["/bin/kill", "-s", "KILL", "--", "-4242"]]


def test_static_records_follow_the_kernel_and_the_helper(tmp_path: Path) -> None:
    cache = StaticCache(tmp_path, "abc")
    assert cache.directory.name == f"abc-{helper_digest()}"
    for name in (cache.directory.name, "abc", f"gone-{helper_digest()}", "abc-0123456789ab"):
        (tmp_path / "static" / name).mkdir(parents=True)
    removed = prune_static(tmp_path, {"abc"})
    assert sorted(p.name for p in removed) == sorted(
        ["abc", f"gone-{helper_digest()}", "abc-0123456789ab"])
    assert [p.name for p in (tmp_path / "static").iterdir()] == [cache.directory.name]
    assert prune_static(tmp_path / "nowhere", {"abc"}) == []


def test_tool_versions_are_cached_per_image_build(tmp_path: Path) -> None:
    from lab.image.build import Image
    cache = StaticCache(tmp_path, "abc")
    image = Image(tmp_path / "trixie-1234", {"release": "trixie", "built_at": "2026-12-01"})
    assert cache.tools(image) is None  # first run: the guest is asked
    said = {"clang": "Debian clang version 19.1.7", "bpftrace": "bpftrace v0.23.2"}
    assert cache.store_tools(image, said) == said
    assert cache.tools(image) == said  # later runs: not asked again
    rebuilt = Image(tmp_path / "trixie-1234", {"release": "trixie", "built_at": "2026-12-02"})
    assert cache.tools(rebuilt) is None  # a rebuilt image may have newer tools
    assert cache.store_tools(image, {}) == {}  # nothing said: nothing recorded
    assert cache.store_tools(image, "garbage") == {}
