#!/bin/sh
# mmdebstrap --customize-hook: turns the fresh Debian tree ($1) into a lab guest.
# Runs on the host as root. Inputs come from the environment (set by lab/image.py):
#   LAB_IMAGES   this directory (overlay/, masked-units.txt)
#   LAB_KEYS     directory with ssh_host_ed25519_key{,.pub} and client_ed25519.pub
#   LAB_USER     the unprivileged user scenarios use
#   LAB_OUT      artefact directory: vmlinuz, initrd.img, vmlinux (debug) are copied there
set -eu
tree=$1

say() { echo "fentry-lab: $*" >&2; }

say "installing lab files and keys"
cp -a "$LAB_IMAGES/overlay/." "$tree/"
rm -f "$tree"/etc/ssh/ssh_host_*
install -m 0600 "$LAB_KEYS/ssh_host_ed25519_key" "$tree/etc/ssh/ssh_host_ed25519_key"
install -m 0644 "$LAB_KEYS/ssh_host_ed25519_key.pub" "$tree/etc/ssh/ssh_host_ed25519_key.pub"
install -d -m 0700 "$tree/root/.ssh"
install -m 0600 "$LAB_KEYS/client_ed25519.pub" "$tree/root/.ssh/authorized_keys"

say "creating user $LAB_USER"
chroot "$tree" useradd --create-home --shell /bin/bash "$LAB_USER"

say "masking units a lab does not need"
grep -v '^#' "$LAB_IMAGES/masked-units.txt" | while read -r unit; do
    [ -n "$unit" ] && ln -sf /dev/null "$tree/etc/systemd/system/$unit"
done
rm -f "$tree"/etc/systemd/system/*.wants/sshd-keygen.service
rm -rf "$tree/etc/systemd/system/getty.target.wants" "$tree/etc/systemd/system/timers.target.wants"
# Generators other than fstab cost time at every boot and bring nothing to a lab.
mkdir -p "$tree/etc/systemd/system-generators"
for gen in "$tree"/usr/lib/systemd/system-generators/*; do
    name=$(basename "$gen")
    [ "$name" = systemd-fstab-generator ] || ln -sf /dev/null "$tree/etc/systemd/system-generators/$name"
done
for unit in fentry-lab-net.service fentry-lab-ready.service; do
    ln -sf "/etc/systemd/system/$unit" "$tree/etc/systemd/system/multi-user.target.wants/$unit"
done
echo "fentry-lab" > "$tree/etc/hostname"

kernel=$(basename "$(ls "$tree"/boot/vmlinuz-* | sort | tail -n 1)")
krel=${kernel#vmlinuz-}
# Without udev nothing loads a driver for a device. Bullseye's 5.10 builds the virtio PCI
# transport as a module that nothing else pulls in, so eth0 would never appear there.
if grep -q '^CONFIG_VIRTIO_PCI=m' "$tree/boot/config-$krel"; then
    echo virtio_pci > "$tree/etc/modules-load.d/fentry-lab-virtio.conf"
fi
# Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (64 KiB for an SSH session) and
# libbpf before 1.0 (bullseye's 0.3) does not raise it: lift it for sshd and its sessions.
printf '[Service]\nLimitMEMLOCK=infinity\n' > "$tree/etc/systemd/system/ssh.service.d/memlock.conf"
say "kernel $krel: fetching linux-image-$krel-dbg"
chroot "$tree" sh -c "cd /tmp && apt-get -q -o APT::Sandbox::User=root download linux-image-$krel-dbg"
deb=$(ls "$tree"/tmp/linux-image-"$krel"-dbg_*.deb)
say "extracting the debug vmlinux from $(basename "$deb") ($(du -m "$deb" | cut -f1) MB)"
# Up to 7.2 the vmlinux is /usr/lib/debug/boot/vmlinux-$krel; from 7.3 that is a symlink to
# /usr/lib/debug/lib/modules/$krel/vmlinux. tar fails on the member a package lacks: the cp
# below is the check.
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tree" "./usr/lib/debug/boot/vmlinux-$krel" \
    "./usr/lib/debug/lib/modules/$krel/vmlinux" 2>/dev/null || true
basename "$deb" > "$LAB_OUT/dbg-deb.txt"
rm -f "$deb"

cp "$tree/boot/vmlinuz-$krel" "$LAB_OUT/vmlinuz"
cp "$tree/boot/initrd.img-$krel" "$LAB_OUT/initrd.img"
cp -L "$tree/usr/lib/debug/boot/vmlinux-$krel" "$LAB_OUT/vmlinux"
echo "$krel" > "$LAB_OUT/kernel-release.txt"
chroot "$tree" dpkg-query -W -f '${Package}\t${Version}\n' > "$LAB_OUT/packages.tsv"
