"""SSH to a lab over paramiko, with the guest's host key pinned.

Security: the only accepted host key is the one generated on the host at image build time
(RejectPolicy for anything else), the client authenticates with the lab's own key, and no
agent or password is ever tried.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import select
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from lab.errors import LabError, LabFailure

MAX_OUTPUT = 4 * 1024 * 1024  # bytes kept per stream; the rest is counted and dropped
# A command silent this long gets an SSH keepalive that must be answered within as long
# again: a guest that stopped answering (network down both ways, frozen) is noticed in
# ~2 * KEEPALIVE_S, not at the command's deadline. (TCP alone cannot tell: qemu's user-mode
# network acknowledges the host side of the connection whatever the guest does.)
KEEPALIVE_S = 10.0

# paramiko logs its transport thread's failures, tracebacks included, to stderr through
# Python's last-resort handler; every failure reaches the user as a LabError instead.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False


def fingerprint(key_type: str, blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key, as `ssh-keygen -l` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{key_type} SHA256:{digest}"


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    key_file: Path
    host_key_type: str
    host_key: str  # base64

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.host_key_type} {self.host_key}\n"


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int  # -1 when it timed out or the connection was lost
    stdout: bytes
    stderr: bytes
    duration_s: float
    timed_out: bool = False
    stdout_dropped: int = 0  # bytes past MAX_OUTPUT that were not kept
    stderr_dropped: int = 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def to_command(argv_or_shell: Sequence[str] | str) -> str:
    """SSH runs a command line through the remote shell: argv lists are quoted exactly."""
    if isinstance(argv_or_shell, str):
        return argv_or_shell
    return shlex.join(argv_or_shell)


class _Collector:
    def __init__(self, limit: int, on_data: Callable[[bytes], None] | None) -> None:
        self.chunks: list[bytes] = []
        self.kept = 0
        self.dropped = 0
        self.limit = limit
        self.on_data = on_data

    def add(self, data: bytes) -> None:
        if self.on_data:
            self.on_data(data)
        room = self.limit - self.kept
        if room > 0:
            self.chunks.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def value(self) -> bytes:
        return b"".join(self.chunks)


class Session:
    """One SSH connection to a lab; use as a context manager."""

    def __init__(self, target: SshTarget, *, connect_timeout: float = 10.0,
                 attempts: int = 3) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.attempts = attempts
        self._client: paramiko.SSHClient | None = None

    def __enter__(self) -> Session:
        self.connect(attempts=self.attempts)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, *, attempts: int = 3, backoff_s: float = 1.0) -> None:
        """Connect with bounded retries; a host key mismatch is never retried."""
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                self._client = self._connect_once()
                return
            except paramiko.BadHostKeyException as exc:
                offered = fingerprint(exc.key.get_name(), exc.key.asbytes())
                expected = fingerprint(self.target.host_key_type, _b64(self.target.host_key))
                raise LabFailure(
                    f"The lab at {self.target.host}:{self.target.port} offered host key "
                    f"{offered}, but the key pinned for it is {expected}. Refusing to "
                    "connect: something else may be listening on that port, or the image was "
                    "rebuilt under a running lab. Run `invoke lab.destroy` and `invoke lab.up`."
                ) from None
            except paramiko.AuthenticationException as exc:
                raise LabFailure(
                    f"The lab at {self.target.host}:{self.target.port} refused the lab's key "
                    f"{self.target.key_file} ({exc}). Rebuild the image "
                    "(`invoke image.build --force`) and recreate the lab."
                ) from None
            except (OSError, paramiko.SSHException, EOFError) as exc:
                last = exc
                if attempt + 1 < attempts:
                    time.sleep(backoff_s * (2**attempt))
        raise LabFailure(
            f"Could not connect by SSH to {self.target.user}@{self.target.host}:"
            f"{self.target.port} after {attempts} attempts ({last}). Check `invoke lab.status` "
            "and `invoke lab.logs`."
        )

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        host_key = paramiko.PKey.from_type_string(self.target.host_key_type,
                                                  _b64(self.target.host_key))
        client.get_host_keys().add(self.target.known_hosts_name, self.target.host_key_type,
                                   host_key)
        try:
            pkey = paramiko.Ed25519Key.from_private_key_file(str(self.target.key_file))
        except (OSError, paramiko.SSHException) as exc:
            raise LabFailure(f"Cannot read the lab's SSH key {self.target.key_file}: {exc}.") \
                from None
        try:
            client.connect(
                self.target.host, port=self.target.port, username=self.target.user, pkey=pkey,
                timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout, allow_agent=False, look_for_keys=False,
            )
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        return client

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise LabError("SSH session used before connect().")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def open_channel(self, command: str) -> paramiko.Channel:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise LabFailure(f"The SSH connection to {self.target.host}:{self.target.port} "
                             "is gone: did the VM stop? See `invoke lab.status` and "
                             "`invoke lab.logs`.")
        channel = transport.open_session(timeout=self.connect_timeout)
        channel.exec_command(command)
        return channel

    def run(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 60.0,
        stdin: bytes | None = None,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        """Run a command with an overall deadline (paramiko's own timeout is per read).

        The remote side is wrapped in coreutils' `timeout`, so a command that outlives its
        deadline is killed in the guest, not merely abandoned.
        """
        text = to_command(command)
        limit = max(1, math.ceil(timeout))
        # An argv list runs as that program, with no shell of ours between (one exec fewer:
        # 60 ms under TCG); a string is a shell command line.
        inner = text if not isinstance(command, str) else f"sh -c {shlex.quote(text)}"
        wrapped = f"timeout -k 2 {limit} {inner}"
        started = time.monotonic()
        deadline = started + timeout + 5.0
        out = _Collector(max_output, on_stdout)
        err = _Collector(max_output, on_stderr)
        try:
            channel = self.open_channel(wrapped)
            timed_out = _pump(channel, out, err, deadline, stdin or b"")
            status = -1 if timed_out else channel.recv_exit_status()
            channel.close()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise LabFailure(f"The SSH connection to the lab failed while running "
                             f"`{text[:200]}`: {exc}. The VM may have stopped: see "
                             "`invoke lab.status` and `invoke lab.logs`.") from None
        transport = self.client.get_transport()
        if status == -1 and not timed_out and (transport is None or not transport.is_active()):
            raise LabFailure(f"The SSH connection to the lab was lost while running "
                             f"`{text[:200]}`: did the VM stop? See `invoke lab.status` and "
                             "`invoke lab.logs`.")
        # `timeout` exits 124 after TERM; after -k it is KILLed with its group (-1 here).
        if status in (124, 137, -1) and time.monotonic() - started >= limit:
            timed_out = True
        return CommandResult(text, status, out.value(), err.value(),
                             time.monotonic() - started, timed_out, out.dropped, err.dropped)

    def put(self, local: Path, remote: str) -> None:
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        with self.client.open_sftp() as sftp:
            sftp.get(remote, str(local))


def drain(channel: paramiko.Channel, stdout: bytearray, stderr: bytearray) -> None:
    """Append what a background command's channel has ready, without waiting for more."""
    while channel.recv_ready():
        stdout += channel.recv(65536)
    while channel.recv_stderr_ready():
        stderr += channel.recv_stderr(65536)


def read_line(channel: paramiko.Channel, buffer: bytearray, errors: bytearray,
              deadline: float) -> bytes | None:
    """The next line a long-running command printed (without its newline), taken from
    `buffer` first; stderr is kept in `errors`. None at the deadline; EOFError when the
    command ended without one; OSError when the guest stops answering keepalives."""
    alive = _Liveness(channel.get_transport())
    while True:
        end = buffer.find(b"\n")
        if end != -1:
            line = bytes(buffer[:end])
            del buffer[:end + 1]
            return line
        had = len(buffer) + len(errors)
        drain(channel, buffer, errors)
        if len(buffer) + len(errors) > had:
            alive.heard()
            continue
        if channel.exit_status_ready() or channel.eof_received or channel.closed:
            raise EOFError("the command ended")
        if time.monotonic() > deadline:
            return None
        alive.check()
        select.select([channel], [], [], 0.05)


def _pump(channel: paramiko.Channel, out: _Collector, err: _Collector, deadline: float,
          stdin: bytes) -> bool:
    """Feed stdin and read both streams until the command ends; True on the deadline.

    stdin goes in chunks inside the loop: a command that stops reading while its output
    fills the window would otherwise block a plain sendall forever.
    """
    sent = 0
    if not stdin:
        channel.shutdown_write()
    alive = _Liveness(channel.get_transport())
    while True:
        drained = False
        if sent < len(stdin) and (channel.exit_status_ready() or channel.closed):
            sent = len(stdin)  # the command ended without reading all of its input
        elif sent < len(stdin) and channel.send_ready():
            try:
                sent += channel.send(stdin[sent:sent + 32768])
            except OSError:  # closed by the remote end meanwhile
                sent = len(stdin)
            drained = True
            if sent == len(stdin) and not channel.closed:
                channel.shutdown_write()
        while channel.recv_ready():
            out.add(channel.recv(65536))
            drained = True
        while channel.recv_stderr_ready():
            err.add(channel.recv_stderr(65536))
            drained = True
        finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            return False
        if time.monotonic() > deadline:
            return True
        if drained:
            alive.heard()
        else:
            alive.check()
            select.select([channel], [], [], 0.05)


class _Liveness:
    """Keepalives with a reply while a command is silent; OSError when none comes."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        self.every_s = KEEPALIVE_S
        self.last = time.monotonic()
        self.asked: threading.Thread | None = None
        self.asked_at = 0.0

    def heard(self) -> None:
        self.last = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if not self.transport.is_active():
            raise OSError("the SSH transport closed")
        if self.asked is not None:
            if not self.asked.is_alive():
                self.asked, self.last = None, now
            elif now - self.asked_at > self.every_s:
                self.transport.close()
                raise OSError(f"the guest did not answer an SSH keepalive within "
                              f"{self.every_s:.0f} s")
        elif now - self.last > self.every_s:
            self.asked_at = now
            self.asked = threading.Thread(target=self.transport.global_request,
                                          args=("keepalive@openssh.com",), daemon=True)
            self.asked.start()


def _b64(blob: str) -> bytes:
    return base64.b64decode(blob)
