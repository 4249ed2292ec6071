"""The lab's SSH identities, generated on the host so the guest's host key is pinned from
the first connection: a client key (root's authorized key in the guest) and the guest's
ed25519 host key. Made once per cache and reused by every image built from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.host import require_tools, run_checked


@dataclass(frozen=True)
class LabKeys:
    directory: Path

    @property
    def client_private(self) -> Path:
        return self.directory / "client_ed25519"

    @property
    def client_public(self) -> Path:
        return self.directory / "client_ed25519.pub"

    @property
    def host_private(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def host_public(self) -> Path:
        return self.directory / "ssh_host_ed25519_key.pub"

    def host_key_line(self) -> tuple[str, str]:
        """(key type, base64 blob) of the pinned guest host key."""
        key_type, blob = self.host_public.read_text().split()[:2]
        return key_type, blob


def ensure_keys(directory: Path) -> LabKeys:
    keys = LabKeys(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for private, comment in ((keys.client_private, "fentry-lab client"),
                             (keys.host_private, "fentry-lab guest host key")):
        if not private.exists():
            require_tools({"ssh-keygen": "openssh-client"})
            run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                         "-f", str(private)], what="ssh-keygen")
        os.chmod(private, 0o600)
    return keys
