"""The typed guest-helper client: replies become dataclasses, failures LabFailure messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from lab.errors import LabFailure
from lab.run.guest import Facts, GuestHelper, StaticCache, helper_digest, prune_static
from lab.ssh import CommandResult, Session

KERNEL = {"release": "6.12.1", "version": [6, 12, 1], "btf": True,
          "build_id_running": "aa", "build_id_debug_vmlinux": "aa", "uname": "Linux"}


class FakeSession:
    def __init__(self, status: int, out: bytes, err: bytes = b"",
                 timed_out: bool = False) -> None:
        self.result = CommandResult("x", status, out, err, 0.1, timed_out)
        self.requests: list[Any] = []

    def run(self, argv: Any, *, stdin: bytes, timeout: float) -> CommandResult:
        self.requests.append((argv, json.loads(stdin)))
        return self.result


def helper(session: FakeSession) -> GuestHelper:
    return GuestHelper(cast(Session, session))


def test_prepare_reply_is_typed() -> None:
    reply = {"kernel": KERNEL, "traceable": {"do_set_acl": True},
             "in_kallsyms": {"do_set_acl": True}, "live_before": {"do_set_acl": {}},
             "objdump": {"do_set_acl": "listing"}, "bpftrace_lv": {},
             "build": {"ok": True, "log": "", "cached": False}}
    session = FakeSession(0, json.dumps(reply).encode())
    facts = helper(session).prepare({"functions": ["do_set_acl"]})
    assert isinstance(facts, Facts)
    assert facts.kernel.version == (6, 12, 1) and facts.kernel.raw["uname"] == "Linux"
    assert facts.build.cached is False and facts.objdump == {"do_set_acl": "listing"}
    assert session.requests[0][1] == {"functions": ["do_set_acl"]}


def test_finish_reply_is_typed() -> None:
    session = FakeSession(0, b'{"live": {"f": {"bytes": "90"}}, "trace": ["a", "b"]}')
    reply = helper(session).finish(["f"])
    assert reply.trace == ("a", "b") and reply.live == {"f": {"bytes": "90"}}


def test_full_guest_disk_is_named_with_the_fix() -> None:
    session = FakeSession(3, b"", b"fentry-lab-guest: No space left on device: /var/cache/x\n")
    with pytest.raises(LabFailure, match=r"the guest's disk is full .* Fix: `invoke "
                                         r"lab.destroy && invoke lab.up`"):
        helper(session).peek(["f"])


def test_a_broken_reply_is_a_lab_failure() -> None:
    with pytest.raises(LabFailure, match="answered peek with something that is not JSON"):
        helper(FakeSession(0, b"Traceback (most recent call last):")).peek(["f"])
    with pytest.raises(LabFailure, match="reply lacks 'kernel'"):
        helper(FakeSession(0, b"{}")).facts({})
    with pytest.raises(LabFailure, match=r"\(prepare, timed out after 600 s\)"):
        helper(FakeSession(-1, b"", timed_out=True)).prepare({})


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
