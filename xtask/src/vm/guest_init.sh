#!/bin/sh
# PID 1 of the VM lab guest (the initramfs /init).
# Loads the kernel modules, runs the lab scenarios, reports everything the
# host needs on the serial console as "TOA-LAB ..." lines, and powers off.
# Nothing here may stop early: every path ends in "poweroff -f".

export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run
mount -t tmpfs tmpfs /tmp
# Kernel messages must not interleave with results: only emergencies reach
# the console from here on (dmesg is printed in full at the end).
# The host may change that and what the lab runs on the kernel command line:
# toa_lab.printk=N (stress runs want lockup backtraces on the console) and
# toa_lab.args=WORDS (commas stand for spaces; default: the scenarios).
# toa_lab.kmod=0 loads the eBPF mode (/bin/toa bpf load) instead of toa.ko,
# toa_lab.capture=WORD with that capture path (every `toa bpf load` here and
# in the lab reads TOA_CAPTURE), and toa_lab.capture_expect=WORD is the one
# `toa status` must then show. toa_lab.cgroup=v1 (eBPF mode) boots a cgroup
# v1 host: a tmpfs at /sys/fs/cgroup holding each v1 controller, no cgroup2.
printk=1
cgroup=v2
cgroup_v1_unmounted=
kmod=1
# The chaos run (random syscall sequences, see toa-lab chaos): seconds and
# seed; 0 seconds leaves it out.
chaos_secs=20
chaos_seed=
# TCP_ULP steps in the chaos run (toa_lab.chaos_tls=1): off by default, as
# kTLS sockets left half-closed towards the simulator keep tls.ko busy for
# minutes, and the ktls scenario after it needs a fresh tls.ko.
chaos_tls=0
capture_expect=
args="scenarios,--expect,module,--module,/lib/modules/toa.ko"
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case "$word" in
        toa_lab.printk=*) printk="${word#toa_lab.printk=}" ;;
        toa_lab.args=*) args="${word#toa_lab.args=}" ;;
        toa_lab.kmod=*) kmod="${word#toa_lab.kmod=}" ;;
        toa_lab.capture=*) export TOA_CAPTURE="${word#toa_lab.capture=}" ;;
        toa_lab.capture_expect=*) capture_expect="${word#toa_lab.capture_expect=}" ;;
        toa_lab.cgroup=*) cgroup="${word#toa_lab.cgroup=}" ;;
        toa_lab.chaos=*) chaos_secs="${word#toa_lab.chaos=}" ;;
        toa_lab.chaos_seed=*) chaos_seed="${word#toa_lab.chaos_seed=}" ;;
        toa_lab.chaos_tls=*) chaos_tls="${word#toa_lab.chaos_tls=}" ;;
    esac
done

# A module-mode scenario run is two lab runs: the ktls scenario leaves
# toa.ko loaded until reboot, so it runs last, on its own, after the
# operator checks that unload the module. The words of toa_lab.args are
# sorted for the two: `--only NAME` (one name each: a comma would be a
# space) goes to the run that owns NAME; every other word goes to both.
# --module-param values are also what each insmod of toa.ko here passes, so
# the module is loaded as the lab believes.
module_scenarios=0
if [ "$kmod" != 0 ] && [ "${args%%,*}" = scenarios ]; then
    case ",$args," in
        *,--expect,module,*) module_scenarios=1 ;;
    esac
fi
main='' both='' params='' prev='' only=0 main_only=0 ktls=0 chaos=0
for word in $(echo "$args" | tr ',' ' '); do
    case "$prev" in
        --only)
            only=1
            if [ "$word" = ktls ] && [ "$module_scenarios" = 1 ]; then
                ktls=1
            elif [ "$word" = chaos ] && [ "$module_scenarios" = 1 ]; then
                chaos=1
            else
                main="$main --only $word"
                main_only=1
            fi
            prev=
            continue
            ;;
        --module-param) params="$params $word" ;;
    esac
    prev=$word
    [ "$word" = --only ] && continue
    main="$main $word"
    both="$both $word"
done
[ "$module_scenarios" = 1 ] && [ "$only" = 0 ] && ktls=1 && chaos=1
[ "$chaos_secs" = 0 ] && chaos=0
# Nothing left for the first run when --only named ktls alone.
main_run=1
[ "$only" = 1 ] && [ "$main_only" = 0 ] && main_run=0

# load_toa: insmod toa.ko with the lab's parameters and say how it went.
load_toa() {
    # Word splitting of the parameter list is the point here.
    # shellcheck disable=SC2086
    if out=$(insmod /lib/modules/toa.ko $params 2>&1); then
        echo "TOA-LAB INSMOD OK toa.ko"
    else
        echo "TOA-LAB INSMOD FAIL toa.ko: $out"
    fi
}

echo "$printk" > /proc/sys/kernel/printk
echo "TOA-LAB INIT"
[ -e /dev/net/tun ] || { mkdir -p /dev/net; mknod /dev/net/tun c 10 200; }
ip link set lo up

# Modules the lab needs before toa.ko (tun and its dependencies), in order.
for m in $(cat /lib/modules/preload); do
    if out=$(insmod "/lib/modules/$m" 2>&1); then
        echo "TOA-LAB INSMOD OK $m"
    else
        echo "TOA-LAB INSMOD FAIL $m: $out"
    fi
done
echo "TOA-LAB KERNEL $(uname -r)"

# The mounts at and under /sys/fs/cgroup, as /proc/mounts lists them.
cgroup_mounts() {
    awk '$2 == "/sys/fs/cgroup" || index($2, "/sys/fs/cgroup/") == 1' /proc/mounts
}

# cgroup_v1_check WHEN: reports (as an operator check, cgroup-v1-WHEN)
# whether the cgroup v1 mounts are all as this guest made them and no
# cgroup2 sits at or under /sys/fs/cgroup; after unload, also that toa's
# own cgroup2 mount is gone.
cgroup_v1_check() {
    cgroup_mounts > /tmp/cgroup-v1.now
    n=$(grep -c ' cgroup ' /tmp/cgroup-v1.before)
    others=$(awk '$3 == "cgroup2" { print $2 }' /proc/mounts | tr '\n' ' ')
    # Kernels may offer a controller to cgroup v2 only (Debian 13's 6.12
    # builds memory and cpuset without their v1 interface): those are
    # named, and the check holds for every one that mounted.
    if [ "$n" -lt 1 ]; then
        echo "TOA-LAB OPERATOR cgroup-v1-$1 FAIL the guest could mount no v1 controller (failed:${cgroup_v1_unmounted:- none})"
    elif [ "$(cat /tmp/cgroup-v1.now)" != "$(cat /tmp/cgroup-v1.before)" ]; then
        echo "TOA-LAB OPERATOR cgroup-v1-$1 FAIL the mounts under /sys/fs/cgroup changed: $(tr '\n' ';' < /tmp/cgroup-v1.now)"
    elif [ "$1" = unload ] && [ -n "$others" ]; then
        echo "TOA-LAB OPERATOR cgroup-v1-$1 FAIL cgroup2 still mounted at $others"
    else
        echo "TOA-LAB OPERATOR cgroup-v1-$1 PASS $n v1 controllers mounted as before (not offered in v1:${cgroup_v1_unmounted:- none}); cgroup2 at: ${others:-nowhere}"
    fi
}

# Everything dmesg says after this mark is checked for warnings and oopses.
echo "TOA-LAB MARK before toa.ko" > /dev/kmsg
if [ "$kmod" = 0 ]; then
    # The eBPF mode attaches at the cgroup v2 root and pins in bpffs. A
    # cgroup v1 host has the v1 controllers under /sys/fs/cgroup and no
    # cgroup2: toa must attach in a cgroup2 mount of its own and leave them.
    if [ "$cgroup" = v1 ]; then
        mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
        for c in $(awk '$1 !~ /^#/ && $4 == 1 { print $1 }' /proc/cgroups); do
            mkdir -p "/sys/fs/cgroup/$c"
            mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" ||
                cgroup_v1_unmounted="$cgroup_v1_unmounted $c"
        done
        cgroup_mounts > /tmp/cgroup-v1.before
    else
        mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    fi
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null
    if out=$(/bin/toa bpf load 2>&1); then
        echo "TOA-LAB INSMOD OK toa bpf load: $(echo "$out" | head -n 1);$(echo "$out" | grep capture)"
    else
        echo "TOA-LAB INSMOD FAIL toa bpf load: $out"
    fi
    [ "$cgroup" = v1 ] && cgroup_v1_check load
else
    load_toa
fi

if [ "$main_run" = 1 ]; then
    # Word splitting of the list is the point here.
    # shellcheck disable=SC2086
    /bin/toa-lab $main
    echo "TOA-LAB EXIT $?"
fi

# operator NAME WANT-EXIT WANT-TEXT COMMAND...: runs the operator's `toa`
# command, shows what it printed, and reports PASS when it exited WANT-EXIT
# and said WANT-TEXT.
operator() {
    name=$1 want=$2 text=$3
    shift 3
    "$@" >/tmp/operator.out 2>&1
    got=$?
    sed "s/^/TOA-LAB OPERATOR-OUT $name: /" /tmp/operator.out
    if [ "$got" = "$want" ] && grep -qF -- "$text" /tmp/operator.out; then
        echo "TOA-LAB OPERATOR $name PASS exit $got"
    else
        echo "TOA-LAB OPERATOR $name FAIL exit $got, expected $want and \"$text\""
    fi
}

# After the scenarios (not stress or bench runs): the operator's command on
# this kernel, in the mode the run used. Its self-test passes with the mode
# active (also with trust and ports narrowed: it must pick a proxy inside
# trusted_proxies and an allowed port) and fails, naming the checks, once the
# mode is gone. The number of checks is printed, so none can go missing.
narrowed_trust=10.9.0.0/16,fd00:9::/64
narrowed_ports=443,8000-8099
if [ -x /bin/toa ] && [ "$kmod" != 0 ] && [ "${args%%,*}" = scenarios ]; then
    echo "TOA-LAB OPERATOR-CHECKS 8"
    operator status 0 "mode:    toa.ko" /bin/toa status --sample 0.2
    operator stats-prometheus 0 "toa_syn_recv_sock_toa_total" /bin/toa stats --format prometheus
    operator selftest-module 0 "selftest: 5 passed, 0 failed" /bin/toa selftest
    operator bpf-refused-beside-module 1 "toa.ko is loaded" /bin/toa bpf load
    echo "$narrowed_trust" > /sys/module/toa/parameters/trusted_proxies
    echo "$narrowed_ports" > /sys/module/toa/parameters/ports
    operator selftest-narrowed 0 "proxy 10.9.0.1 sends TOA" /bin/toa selftest
    rmmod toa
    operator selftest-no-module 1 "FAIL v4-toa-on-inet" /bin/toa selftest
    operator status-no-module 1 "no toa mode is active" /bin/toa status --sample 0.2
    operator stats-no-module 1 "toa.ko is not loaded" /bin/toa stats
elif [ -x /bin/toa ] && [ "${args%%,*}" = scenarios ]; then
    if [ "$cgroup" = v1 ]; then
        echo "TOA-LAB OPERATOR-CHECKS 12"
    else
        echo "TOA-LAB OPERATOR-CHECKS 10"
    fi
    operator status 0 "mode:    eBPF" /bin/toa status --sample 0.2
    operator capture 0 "capture         = ${capture_expect:-?} (" /bin/toa status --sample 0.2
    operator stats-prometheus 0 "toa_getname_family_kept_total" /bin/toa stats --format prometheus
    operator selftest-bpf 0 "selftest: 5 passed, 0 failed" /bin/toa selftest
    operator bpf-load-again 0 "settings updated in place" \
        /bin/toa bpf load --trusted-proxies "$narrowed_trust" --ports "$narrowed_ports"
    operator status-narrowed 0 "only 10.9.0.0/16,fd00:9::/64 may set" /bin/toa status --sample 0.2
    operator selftest-narrowed 0 "proxy 10.9.0.1 sends TOA" /bin/toa selftest
    operator bpf-unload 0 "eBPF mode detached" /bin/toa bpf unload
    [ "$cgroup" = v1 ] && cgroup_v1_check unload
    operator selftest-unloaded 1 "FAIL v4-toa-on-inet" /bin/toa selftest
    operator status-unloaded 1 "no toa mode is active" /bin/toa status --sample 0.2
fi

# Random syscall sequences with rmmod/insmod between, before ktls: its
# TCP_ULP steps may pin the module, which ktls then finds pinned.
if [ "$chaos" = 1 ]; then
    [ -e /sys/module/toa ] || load_toa
    chaos_args="--module /lib/modules/toa.ko --seconds $chaos_secs"
    for p in $params; do chaos_args="$chaos_args --module-param $p"; done
    [ -n "$chaos_seed" ] && chaos_args="$chaos_args --seed $chaos_seed"
    [ "$chaos_tls" = 1 ] && [ -e /lib/modules/tls.ko ] && chaos_args="$chaos_args --tls /lib/modules/tls.ko"
    # shellcheck disable=SC2086
    /bin/toa-lab chaos $chaos_args
    echo "TOA-LAB EXIT $?"
fi

if [ "$ktls" = 1 ]; then
    [ -e /sys/module/toa ] || load_toa
    # shellcheck disable=SC2086
    /bin/toa-lab $both --only ktls
    echo "TOA-LAB EXIT $?"
fi

echo "TOA-LAB DMESG-BEGIN"
dmesg
echo "TOA-LAB DMESG-END"
echo "TOA-LAB TAINT $(cat /proc/sys/kernel/tainted)"
echo "TOA-LAB POWEROFF"
sync
poweroff -f
# Not reached unless poweroff failed; the kernel then panics and QEMU
# (-no-reboot) exits.
exit 1
