#!/bin/bash
# toa-lab-runner: baked into the guest image. The host attaches the test (a tar
# holding stage.sh, lab.env and toa-lab) as the second virtio disk and names the stage
# on the kernel command line (toa_lab.stage=N); this unpacks and runs it, then
# powers the guest off, which ends the QEMU run (-no-reboot).
set -u
echo "TOA-LAB runner: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s"
for _ in $(seq 150); do
    [ -b /dev/vdb ] && break
    sleep 0.2
done
rm -rf /run/toa-lab
mkdir -p /run/toa-lab
if tar -xf /dev/vdb -C /run/toa-lab && [ -f /run/toa-lab/stage.sh ]; then
    bash /run/toa-lab/stage.sh
    echo "TOA-LAB runner: stage script exited with status $?"
else
    echo "TOA-LAB runner: no test on /dev/vdb (a tar with stage.sh)"
fi
sync
systemctl poweroff
