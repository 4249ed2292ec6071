#!/usr/bin/env bash
# Hosted runners have /dev/kvm without access for the runner user: the udev rule that
# libbpf/ci and virtme-ng use, applied only when needed. `--accel kvm` then proves it works.
set -euo pipefail
if [ -e /dev/kvm ] && [ ! -w /dev/kvm ]; then
    echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' \
        | sudo tee /etc/udev/rules.d/99-kvm4all.rules >/dev/null
    sudo udevadm control --reload-rules
    sudo udevadm trigger --name-match=kvm
fi
ls -l /dev/kvm
