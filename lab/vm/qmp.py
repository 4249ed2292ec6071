"""One QMP command over qemu's unix socket: greeting, qmp_capabilities, command, reply."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class QmpError(Exception):
    """The exchange failed: no socket, no answer in time, or an error reply."""


def qmp_command(sock_path: Path, command: str, timeout: float = 3.0,
                **arguments: Any) -> dict[str, Any]:
    """Run one QMP command and return its "return" value (events in between are skipped)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(sock_path))
            stream = sock.makefile("rwb")

            def reply() -> dict[str, Any]:
                while True:
                    line = stream.readline()
                    if not line:
                        raise QmpError("qemu closed the QMP socket")
                    message: dict[str, Any] = json.loads(line)
                    if "event" not in message:
                        return message

            def send(name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
                request: dict[str, Any] = {"execute": name}
                if args:
                    request["arguments"] = args
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                answer = reply()
                if "error" in answer:
                    raise QmpError(f"{name}: {answer['error'].get('desc', answer['error'])}")
                return answer

            if "QMP" not in reply():
                raise QmpError("no QMP greeting")
            send("qmp_capabilities")
            result = send(command, arguments or None).get("return", {})
            return result if isinstance(result, dict) else {"return": result}
    except (OSError, ValueError) as exc:
        raise QmpError(str(exc) or type(exc).__name__) from None
