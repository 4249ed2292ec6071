"""The QMP exchange against a scripted server on a real unix socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.vm.qmp import QmpError, qmp_command

GREETING: dict[str, object] = {"QMP": {"version": {}, "capabilities": []}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, object]], list[object]]]:
    """A one-connection QMP server: greets, answers each request from `replies`."""
    path = tmp_path / "qmp.sock"
    seen: list[dict[str, object]] = []
    replies: list[object] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(json.dumps(GREETING).encode() + b"\n")
            f.flush()
            for line in f:
                seen.append(json.loads(line))
                reply = replies.pop(0) if replies else {"return": {}}
                if reply is None:  # stay silent
                    threading.Event().wait(5)
                    return
                for message in reply if isinstance(reply, list) else [reply]:
                    f.write((message if isinstance(message, bytes)
                             else json.dumps(message).encode()) + b"\n")
                f.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, seen, replies
    listener.close()


def test_capabilities_then_command(server: tuple[Path, list[dict[str, object]],
                                                 list[object]]) -> None:
    path, seen, replies = server
    replies += [{"return": {}}, [{"event": "STOP"}, {"return": {"status": "running"}}]]
    assert qmp_command(path, "query-status") == {"status": "running"}  # event skipped
    assert seen == [{"execute": "qmp_capabilities"}, {"execute": "query-status"}]


def test_error_reply(server: tuple[Path, list[dict[str, object]], list[object]]) -> None:
    path, _, replies = server
    replies += [{"return": {}}, {"error": {"class": "GenericError", "desc": "nope"}}]
    with pytest.raises(QmpError, match="quit: nope"):
        qmp_command(path, "quit")


def test_silent_server_times_out(server: tuple[Path, list[dict[str, object]],
                                               list[object]]) -> None:
    path, _, replies = server
    replies += [None]
    with pytest.raises(QmpError):
        qmp_command(path, "quit", timeout=0.3)


def test_garbage_and_missing_socket(server: tuple[Path, list[dict[str, object]],
                                                  list[object]], tmp_path: Path) -> None:
    path, _, replies = server
    replies += [b"{not json"]
    with pytest.raises(QmpError):
        qmp_command(path, "quit")
    with pytest.raises(QmpError):
        qmp_command(tmp_path / "none.sock", "quit")
