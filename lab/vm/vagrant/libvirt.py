"""The host side of the Vagrant backend: tools, libvirt's daemons, its pool, networks, domains.

Vagrant drives libvirt's system instance (qemu:///system) through the vagrant-libvirt plugin.
Where no init system runs libvirt's daemons (PID 1 is not systemd, as in containers and on
this project's CI machines), they are started here by hand, `virtlogd -d` then `libvirtd -d`,
and the lab says so. Everything else talks to libvirt with `virsh`, argv lists only.

The top-level Vagrantfile runs `python -m lab.vm.vagrant.vagrantfile config|prepare|cleanup`,
so that a plain `vagrant up` reads the same settings and checks the same things as
`invoke lab.up --backend vagrant`.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import json
import os
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from lab import console
from lab.errors import LabError
from lab.host import require_tools, run_checked, tool_path

LIBVIRT_URI = "qemu:///system"
POOL = "default"  # vagrant-libvirt's storage_pool_name default
DEFAULT_POOL_PATH = Path("/var/lib/libvirt/images")
# The isolated network the lab's VMs live on (no <forward>: nothing leaves the host).
NETWORK = "fentry-lab"
NETWORK_ADDRESS = "192.168.126.0/24"
DOMAIN_PREFIX = "fentry-lab-"

# Debian packages the backend needs. dnsmasq-base is only a Recommends of libvirt, but
# without it libvirt's networks have no DHCP and vagrant-libvirt never learns the address.
DEBIAN_PACKAGES = ("vagrant", "vagrant-libvirt", "libvirt-daemon-system", "dnsmasq-base",
                   "qemu-system-x86", "qemu-utils")
TOOLS = {
    "vagrant": "vagrant",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "dnsmasq": "dnsmasq-base",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
}
LIBVIRTD_SOCKET = Path("/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
PLUGIN_FILES = (Path("/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json"),)


def install_hint() -> str:
    return f"apt-get install --no-install-recommends {' '.join(DEBIAN_PACKAGES)}"


def vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def plugin_installed(home: Path | None = None) -> bool:
    """vagrant-libvirt as Debian's system plugin or as a user plugin (`vagrant plugin install`)."""
    if any(path.is_file() for path in PLUGIN_FILES):
        return True
    user_plugins = (home or vagrant_home()) / "plugins.json"
    try:
        data = json.loads(user_plugins.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "vagrant-libvirt" in data.get("installed", {})


def check_tools() -> None:
    try:
        require_tools(TOOLS)
    except LabError as exc:
        raise LabError(f"{exc} The Vagrant backend needs the Debian packages "
                       f"{', '.join(DEBIAN_PACKAGES)}: `{install_hint()}`.") from None
    if not plugin_installed():
        raise LabError("Vagrant is installed but its libvirt provider is not (the Debian "
                       f"package vagrant-libvirt). Install it with `{install_hint()}`.")


# -- daemons -----------------------------------------------------------------------------


def socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _wait_socket(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if socket_answers(path):
            return True
        time.sleep(0.1)
    return socket_answers(path)


def ensure_daemons() -> None:
    """libvirtd (and virtlogd, which keeps the serial console log) must answer; start them
    when nothing else will."""
    if socket_answers(LIBVIRTD_SOCKET) and socket_answers(VIRTLOGD_SOCKET):
        return
    how = "`virtlogd -d` then `libvirtd -d` as root"
    systemd = Path("/run/systemd/system").is_dir()
    if systemd:
        how = "`systemctl start virtlogd.socket libvirtd.service` as root"
    if os.geteuid() != 0:
        raise LabError(f"libvirt's daemons are not running and only root can start them: "
                       f"run {how} (the Vagrant backend drives libvirt's system instance, "
                       f"{LIBVIRT_URI}).")
    if systemd:
        console.say("starting libvirt's daemons (systemctl start virtlogd libvirtd)")
        run_checked(["systemctl", "start", "virtlogd.socket", "libvirtd.service"],
                    what="starting libvirtd")
    else:
        # No init system runs them (PID 1 is not systemd): start them by hand, detached,
        # virtlogd first because libvirtd hands it every VM's console log.
        if not socket_answers(VIRTLOGD_SOCKET):
            console.say("starting virtlogd (`virtlogd -d`: no init system runs it here)")
            run_checked([tool_path("virtlogd"), "-d"], what="virtlogd -d")
            _wait_socket(VIRTLOGD_SOCKET, 10.0)
        if not socket_answers(LIBVIRTD_SOCKET):
            console.say("starting libvirtd (`libvirtd -d`: no init system runs it here)")
            run_checked([tool_path("libvirtd"), "-d"], what="libvirtd -d")
    if not (_wait_socket(LIBVIRTD_SOCKET, 15.0) and _wait_socket(VIRTLOGD_SOCKET, 5.0)):
        raise LabError(f"libvirtd did not answer on {LIBVIRTD_SOCKET} within 15 s after being "
                       "started; see /var/log/libvirt/ and try `libvirtd -v` in a terminal.")


def ensure_kvm_device_access(dev: Path = Path("/dev/kvm")) -> None:
    """Give /dev/kvm the group and mode udev gives it (root:kvm 0660) where no udev ran.

    libvirt checks whether its qemu user (libvirt-qemu, group kvm) may open /dev/kvm; a
    root-only device makes it reject its own cached QEMU capabilities at every call ("KVM
    was enabled when probing, but it is not available now") and probe QEMU again, which
    took 4 s idle and 48 s on a busy 2-core host for each `virsh define`. The lab still runs
    on TCG unless the CPU has vmx/svm (lab/accel.py).
    """
    try:
        st = dev.stat()
    except OSError:
        return
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
        return
    if st.st_gid != 0 or st.st_mode & 0o077:
        return  # someone chose these permissions on purpose: leave them
    if os.geteuid() != 0:
        console.warn(f"{dev} is readable by root only (no udev here): libvirt will re-probe "
                     f"QEMU at every call, which is slow; as root: chgrp kvm {dev} && "
                     f"chmod 0660 {dev}")
        return
    console.say(f"{dev} is root-only (no udev ran here): giving it group kvm, mode 0660, as "
                "udev would, so that libvirt keeps its QEMU capability cache")
    os.chown(dev, 0, kvm_gid)
    os.chmod(dev, 0o660)


# -- virsh -------------------------------------------------------------------------------


def virsh(*args: str, what: str | None = None) -> str:
    return run_checked(["virsh", "-q", "-c", LIBVIRT_URI, *args],
                       what=what or f"virsh {' '.join(args[:2])}")


def virsh_ok(*args: str) -> bool:
    proc = subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, *args], capture_output=True,
                          stdin=subprocess.DEVNULL, check=False)
    return proc.returncode == 0


def _xml(text: str) -> ET.Element:
    """Parse XML that libvirtd wrote (local and trusted, unlike a document from outside)."""
    try:
        return ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise LabError(f"libvirt returned XML that does not parse: {exc}") from None


def pool_path(pool: str = POOL) -> Path | None:
    """The directory of a dir-type pool, or None when the pool is not defined."""
    proc = subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "pool-dumpxml", pool],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return None
    path = _xml(proc.stdout).findtext("target/path")
    return Path(path) if path else None


def ensure_pool(pool: str = POOL) -> Path:
    """The pool vagrant-libvirt uploads boxes into, defined and started (as it would do)."""
    path = pool_path(pool)
    if path is None:
        console.say(f"defining libvirt storage pool {pool!r} at {DEFAULT_POOL_PATH}")
        virsh("pool-define-as", pool, "dir", "--target", str(DEFAULT_POOL_PATH))
        virsh("pool-build", pool)
        path = DEFAULT_POOL_PATH
    info = virsh("pool-info", pool)
    if "running" not in info:
        virsh("pool-start", pool)
    return path


def list_volumes(pool: str = POOL) -> dict[str, Path]:
    """Volume name -> path; empty when the pool does not exist."""
    proc = subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "vol-list", pool],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return {}
    return parse_vol_list(proc.stdout)


def parse_vol_list(text: str) -> dict[str, Path]:
    """`virsh -q vol-list POOL` lines: `name   path` (names have no spaces here)."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found[parts[0]] = Path(parts[-1])
    return found


def upload_volume(name: str, source: Path, pool: str = POOL) -> Path:
    size = source.stat().st_size
    virsh("vol-create-as", pool, name, str(size), "--format", "raw",
          what=f"creating volume {name}")
    try:
        virsh("vol-upload", "--pool", pool, name, str(source), what=f"uploading {source.name}")
    except LabError:
        virsh_ok("vol-delete", "--pool", pool, name)
        raise
    return list_volumes(pool)[name]


def delete_volume(name: str, pool: str = POOL) -> bool:
    if not virsh_ok("vol-delete", "--pool", pool, name):
        return False
    console.say(f"deleted libvirt volume {name}")
    return True


def list_domains() -> list[str]:
    out = virsh("list", "--all", "--name")
    return [line.strip() for line in out.splitlines() if line.strip()]


def domain_state(domain: str) -> str | None:
    """libvirt's state ("running", "shut off", ...), or None when no such domain exists."""
    proc = subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "domstate", domain],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def domain_files(xml_text: str) -> set[Path]:
    """Every host file a domain definition reads: disks, kernel, initrd."""
    root = _xml(xml_text)
    files = {Path(src.get("file", "")) for src in root.iterfind("devices/disk/source")}
    files |= {Path(root.findtext(f"os/{tag}") or "") for tag in ("kernel", "initrd")}
    return {f for f in files if str(f) not in ("", ".")}


def files_in_use() -> set[Path]:
    """Files read by any libvirt domain, running or not (and their qcow2 backing files)."""
    used: set[Path] = set()
    for domain in list_domains():
        with contextlib.suppress(LabError):
            used |= domain_files(virsh("dumpxml", "--inactive", domain))
    for path in list(used):
        used |= _backing_chain(path)
    return used


def _backing_chain(path: Path) -> set[Path]:
    proc = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json",
                           str(path)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return set()
    try:
        chain = json.loads(proc.stdout)
    except ValueError:
        return set()
    return {Path(entry["filename"]) for entry in chain if isinstance(entry, dict)
            and "filename" in entry}


def qemu_pid(domain: str) -> int:
    """The PID of a running domain's qemu, from libvirt's pid file (0 if unknown)."""
    try:
        return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip())
    except (OSError, ValueError):
        return 0


def network_exists(name: str = NETWORK) -> bool:
    return virsh_ok("net-info", name)


def network_in_use(name: str = NETWORK) -> bool:
    for domain in list_domains():
        with contextlib.suppress(LabError):
            root = _xml(virsh("dumpxml", "--inactive", domain))
            for source in root.iterfind("devices/interface/source"):
                if source.get("network") == name:
                    return True
    return False


def network_xml(name: str = NETWORK, address: str = NETWORK_ADDRESS) -> str:
    """An isolated network (no <forward>: nothing routed off the host) with DHCP.

    What vagrant-libvirt would create for management_network_mode "none", plus dnsmasq's
    no-ping: dnsmasq otherwise pings every new address for up to 3 s before offering it.
    vagrant-libvirt uses an existing network whose address matches its configuration.
    """
    net = ipaddress.ip_network(address)
    gateway, first, last = net[1], net[2], net[-2]
    return (
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n"
        f"  <name>{name}</name>\n"
        "  <bridge stp='off' delay='0'/>\n"
        f"  <ip address='{gateway}' netmask='{net.netmask}'>\n"
        f"    <dhcp><range start='{first}' end='{last}'/></dhcp>\n"
        "  </ip>\n"
        "  <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>\n"
        "</network>\n"
    )


def ensure_network(name: str = NETWORK, address: str = NETWORK_ADDRESS) -> None:
    if not network_exists(name):
        console.say(f"defining libvirt network {name} ({address}, isolated, DHCP)")
        with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix="fentry-lab-net-") as f:
            f.write(network_xml(name, address))
            f.flush()
            virsh("net-define", f.name, what=f"defining network {name}")
    if name not in virsh("net-list", "--name").split():
        virsh("net-start", name, what=f"starting network {name}")


def remove_network(name: str = NETWORK) -> None:
    """Stop and undefine the lab network when no domain is attached to it."""
    if not network_exists(name) or network_in_use(name):
        return
    virsh_ok("net-destroy", name)
    virsh_ok("net-undefine", name)
    console.say(f"removed libvirt network {name}")
