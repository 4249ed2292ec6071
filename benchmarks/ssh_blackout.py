"""How long a command over lab.ssh takes to notice a guest that stopped answering,
against the command's own deadline (the only bound before keepalives), in one run.

A throwaway sshd on 127.0.0.1 serves `sleep`; its session process is frozen (SIGSTOP:
no byte either way) once the command runs. Reported: seconds until Session.run raised,
and the ratio to the command's deadline.

    .venv/bin/python benchmarks/ssh_blackout.py [--deadline 120]
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.errors import LabFailure  # noqa: E402
from lab.ssh import KEEPALIVE_S, Session, SshTarget  # noqa: E402


def keygen(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return kind, blob


def session_sshd(pid: int) -> int:
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.index("(") + 1:stat.rindex(")")].startswith("sshd"):
            return pid
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    raise SystemExit("no sshd ancestor")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        kind, blob = keygen(tmp / "host")
        keygen(tmp / "client")
        (tmp / "auth").write_text((tmp / "client.pub").read_text())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (tmp / "cfg").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {tmp / 'host'}\n"
            f"AuthorizedKeysFile {tmp / 'auth'}\nPasswordAuthentication no\nStrictModes no\n"
            f"PidFile {tmp / 'pid'}\nUsePAM no\nPermitRootLogin prohibit-password\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "cfg")],
                                stderr=subprocess.DEVNULL)
        frozen: list[int] = []
        try:
            time.sleep(1.0)
            target = SshTarget("127.0.0.1", port, pwd.getpwuid(os.getuid()).pw_name,
                               tmp / "client", kind, blob)
            froze_at = [0.0]

            def freeze(data: bytes) -> None:
                if not frozen:
                    frozen.append(session_sshd(int(data.split()[0])))
                    os.kill(frozen[0], signal.SIGSTOP)
                    froze_at[0] = time.monotonic()

            with Session(target) as ssh:
                try:
                    ssh.run("echo $$; sleep 100000", timeout=args.deadline, on_stdout=freeze)
                    raise SystemExit("the command returned: nothing was detected")
                except LabFailure as exc:
                    took = time.monotonic() - froze_at[0]
                    print(f"blackout noticed after {took:.1f} s (KEEPALIVE_S={KEEPALIVE_S:.0f}); "
                          f"command deadline {args.deadline:.0f} s; ratio "
                          f"{took / args.deadline:.2f}\n  {exc.message[:160]}")
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
            sshd.terminate()
            sshd.wait(timeout=10)


if __name__ == "__main__":
    main()
