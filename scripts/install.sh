#!/usr/bin/env bash
# Installs what the lab needs on a Debian 12/13 host: Debian packages (only those missing)
# and a Python virtual environment in .venv with the project.
#   --test        also the test tools, pinned with hashes (requirements-test.txt, from uv.lock)
#   --no-vagrant  without the Vagrant stack (for machines that only use the QEMU backend)
set -euo pipefail
cd "$(dirname "$0")/.."

test_tools=no
vagrant=yes
for arg in "$@"; do
    case "$arg" in
        --test) test_tools=yes ;;
        --no-vagrant) vagrant=no ;;
        *) echo "fentry-lab: install.sh: unknown option $arg (use --test, --no-vagrant)" >&2
           exit 1 ;;
    esac
done

# qemu-system-x86, qemu-utils: the lab VM (TCG or KVM) and its qcow2 disks
# mmdebstrap, e2fsprogs, uidmap: building images without loop mounts
# dpkg, binutils: extracting the debug vmlinux; objdump
# openssh-client, openssh-server: ssh-keygen and `lab.ssh`; sshd for the SSH tests
names=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs uidmap dpkg binutils openssh-client
       openssh-server python3 python3-venv)
# vagrant, vagrant-libvirt, libvirt-daemon-system, dnsmasq-base: the Vagrant backend
#   (dnsmasq-base is only recommended by libvirt, but its network needs it for DHCP)
if [ "$vagrant" = yes ]; then
    names+=(vagrant vagrant-libvirt libvirt-daemon-system dnsmasq-base)
fi
# chromium, fonts-dejavu-core: the `browser` tests render report.html headless; shellcheck:
#   the test command lints scripts/ (--test only)
if [ "$test_tools" = yes ]; then
    names+=(chromium fonts-dejavu-core shellcheck)
fi

missing=()
for pkg in "${names[@]}"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
    echo "fentry-lab: installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "fentry-lab: Debian packages already installed" >&2
fi

if [ ! -x .venv/bin/python ]; then
    echo "fentry-lab: creating the virtual environment .venv" >&2
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
if [ "$test_tools" = yes ]; then
    echo "fentry-lab: installing the project with its locked test tools into .venv" >&2
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q --require-hashes \
        -r requirements-test.txt
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q --no-deps -e .
else
    echo "fentry-lab: installing the project into .venv" >&2
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e .
fi
