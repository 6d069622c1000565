#!/bin/sh
# Runs inside the guest rootfs (chroot) after debootstrap: the kernel the guest
# boots and its headers, an initramfs that finds a virtio root disk, and
# nothing at boot but the test and SERVICES. Safe to run again after an
# interruption.
# Environment: RELEASE (uname -r of the kernel), PACKAGES (more packages),
# SERVICES (units to start at every boot of the guest).
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99toa-valid-until

# A small initramfs: only what mounts an ext4 root on virtio-blk.
mkdir -p /etc/initramfs-tools/conf.d
printf 'MODULES=list\nRESUME=none\nCOMPRESS=gzip\n' >/etc/initramfs-tools/conf.d/toa-lab.conf
printf '%s\n' virtio_pci virtio_blk ext4 >/etc/initramfs-tools/modules

# The chroot shares the host's network: no package may start its service
# here (nginx's would listen on the host's port 80). Services start in the
# guest, at boot.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

dpkg --configure -a
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends \
    "linux-image-$RELEASE" "linux-headers-$RELEASE" $PACKAGES
rm -f /usr/sbin/policy-rc.d
[ -f "/boot/initrd.img-$RELEASE" ] || update-initramfs -c -k "$RELEASE"
apt-get clean
rm -rf /var/lib/apt/lists/*

echo toa-lab >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttoa-lab\n' >/etc/hosts
# The guest resolves no names and has no default route: it reaches only the
# host's test server at 10.0.2.2.
printf '# toa lab: no name resolution\n' >/etc/resolv.conf
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >/etc/fstab
# A fixed machine id: no first-boot presets.
echo 0123456789abcdef0123456789abcdef >/etc/machine-id

# Nothing but the test: no login prompts (a getty on the serial console hangs
# up the console others write to), no timers that reach the network.
for unit in serial-getty@ttyS0.service getty@tty1.service console-getty.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service \
    systemd-networkd.service systemd-resolved.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sf /etc/systemd/system/toa-lab.service /etc/systemd/system/multi-user.target.wants/toa-lab.service
for unit in ${SERVICES:-}; do
    systemctl enable "$unit"
    systemctl is-enabled --quiet "$unit"
done
