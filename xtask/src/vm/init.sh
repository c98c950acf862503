#!/bin/busybox sh
# /init of the vm-test initramfs: mount what the profiler needs, run checks.sh, power
# off. Kernel parameters: vmtest.cgroup=v1|v2 (v1: a hierarchy per controller, as
# Amazon Linux 2 mounts them), vmtest.checks=a,b,c (which checks, in order).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null ||
    mount -t debugfs debugfs /sys/kernel/debug
ip link set lo up

cgroup=v2
checks=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    vmtest.cgroup=*) cgroup=${arg#vmtest.cgroup=} ;;
    vmtest.checks=*) checks=$(echo "${arg#vmtest.checks=}" | tr , ' ') ;;
    esac
done
if [ "$cgroup" = v1 ]; then
    mount -t tmpfs cgroup /sys/fs/cgroup
    for c in memory cpu,cpuacct pids blkio devices freezer; do
        mkdir -p /sys/fs/cgroup/$c
        mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
    done
else
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi

mkdir -p /tmp/work
CHECKS=$checks PROFILER=/opt/profiler/profiler PROGS=/opt/progs WORK=/tmp/work sh /checks.sh
poweroff -f
