#!/bin/bash
# The install test inside the guest (`cargo xtask vm-install-test`).
#
# The host boots the guest once per stage, with this file, lab.env and the
# static lab program toa-lab (its `request` plays an L4 proxy in front of
# nginx) on a tar disk and the stage on the kernel command line
# (toa_lab.stage=N). The disk keeps its state between boots, and so does
# /var/lib/toa-lab, where this script keeps the snapshots later stages
# compare with.
#
# Results go to the second serial port (/dev/ttyS1), which the host reads:
#   TOA-INSTALL STAGE <n> kernel=<uname -r>
#   TOA-INSTALL CHECK <n> <check> PASS|FAIL <detail>
#   TOA-INSTALL OUT <case> <line>      what an installer run printed
#   TOA-INSTALL END <n>
# Progress goes to the console as TOA-LAB lines.
set -u

LAB=/run/toa-lab
# BASE (the test server as the guest reaches it), RELEASE, DIST_NAME, WITH_DKMS,
# MODE (kmod: stage_N; bpf: bpf_stage_N).
# shellcheck source=/dev/null
. "$LAB/lab.env"
STATE=/var/lib/toa-lab
RESULTS=/dev/ttyS1
KREL=$(uname -r)
STAGE=$(sed -n 's/.*toa_lab\.stage=\([0-9]*\).*/\1/p' /proc/cmdline)
DKMS_BIN=/usr/sbin/dkms
DKMS_OFF=/usr/sbin/dkms.toa-lab-off
mkdir -p "$STATE"

function result {
    printf 'TOA-INSTALL %s\n' "$*" >>"$RESULTS"
}

function progress {
    printf 'TOA-LAB %s\n' "$*"
}

# Each check collects what is wrong in PROBLEMS; verdict reports it.
PROBLEMS=()
# expect WHAT COMMAND...: WHAT is what is wrong when COMMAND fails; @DIFF@ in
# it stands for the difference COMMAND found.
function expect {
    local what=$1
    shift
    DIFF=""
    if ! "$@"; then
        PROBLEMS+=("${what//@DIFF@/$DIFF}")
    fi
}

function verdict {
    local name=$1 detail=$2 status=PASS
    if [ ${#PROBLEMS[@]} -gt 0 ]; then
        status=FAIL
        local joined
        joined=$(printf '%s; ' "${PROBLEMS[@]}")
        detail="${joined%; } ($detail)"
    fi
    result "CHECK $STAGE $name $status $detail"
    progress "$name: $status $detail"
    PROBLEMS=()
}

# run_case NAME COMMAND: runs COMMAND (a shell line) with bash, sets RC and
# OUT (stdout and stderr together) and reports every line of it.
RC=0
OUT=""
function run_case {
    local name=$1 cmd=$2 line
    progress "$name: $cmd"
    timeout 1200 bash -c "$cmd" >"$STATE/$name.out" 2>&1 </dev/null
    RC=$?
    OUT=$(cat "$STATE/$name.out")
    result "OUT $name \$ $cmd"
    while IFS= read -r line; do
        result "OUT $name $line"
    done <"$STATE/$name.out"
    result "OUT $name (exit status $RC)"
}

function has {
    grep -qF -- "$1" <<<"$OUT"
}

function lacks {
    ! grep -qF -- "$1" <<<"$OUT"
}

# has_line REGEX: a whole line of the output matches (grep -E).
function has_line {
    grep -qE -- "^$1\$" <<<"$OUT"
}

TOA_BIN=/usr/local/sbin/toa

# selftest_passed: the installer ran `toa selftest` on this kernel and showed
# its lines, every check passing.
function selftest_passed {
    has "proving toa on kernel $KREL: $TOA_BIN selftest" &&
        has_line '  PASS [a-z0-9-]+: .*' &&
        has_line '  selftest: [1-9][0-9]* passed, 0 failed, [0-9]+ skipped' &&
        lacks "  FAIL "
}

function toa_command_installed {
    [ -x "$TOA_BIN" ] && "$TOA_BIN" --version >/dev/null 2>&1
}

function no_toa_command {
    [ ! -e "$TOA_BIN" ]
}

# selftest_summary: the self-test's closing line, for a verdict.
function selftest_summary {
    grep -m1 -oE 'selftest: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' <<<"$OUT"
}

function loaded {
    [ -d /sys/module/toa ] && lsmod | grep -q '^toa '
}

function not_loaded {
    ! [ -d /sys/module/toa ] && ! lsmod | grep -q '^toa '
}

function stats_readable {
    [ -r /proc/net/toa_stats ] && grep -q '^syn_recv_sock_toa' /proc/net/toa_stats
}

function rc_is {
    [ "$RC" = "$1" ]
}

function rc_not_zero {
    [ "$RC" != 0 ]
}

# snapshot: everything an install touches, one sorted line per item, with
# content hashes: module state, boot configuration, module files, DKMS.
function snapshot {
    local f
    {
        if [ -d /sys/module/toa ]; then
            echo "loaded toa srcversion=$(cat /sys/module/toa/srcversion 2>/dev/null)"
        fi
        if [ -d /sys/fs/bpf/toa ]; then
            echo "pinned /sys/fs/bpf/toa: $(find /sys/fs/bpf/toa -mindepth 1 | sort | tr '\n' ' ')"
        fi
        for f in /etc/modules /etc/modules-load.d/* /etc/modprobe.d/* /etc/rc.local /etc/rc.d/rc.local \
            "$TOA_BIN" /etc/toa /etc/systemd/system/toa-bpf.service \
            /etc/systemd/system/*.wants/toa-bpf.service \
            $(find /lib/modules -name 'toa.ko*' 2>/dev/null) \
            $(find /usr/src /var/lib/dkms -maxdepth 1 -name 'toa*' 2>/dev/null); do
            if [ -L "$f" ]; then
                echo "link $f -> $(readlink "$f")"
            elif [ -d "$f" ]; then
                find "$f" \( -type f -o -type l \) -printf '%p\n' | while IFS= read -r g; do
                    if [ -L "$g" ]; then
                        echo "link $g -> $(readlink "$g")"
                    else
                        echo "file $g $(sha256sum <"$g" | cut -c1-64)"
                    fi
                done
            elif [ -f "$f" ]; then
                echo "file $f $(sha256sum <"$f" | cut -c1-64)"
            fi
        done
        grep -H 'toa\.ko' /lib/modules/*/modules.dep 2>/dev/null | sed 's/^/dep /'
    } | sort -u
}

# touched: modification time and inode of every file in the snapshot, to see
# whether a run that should change nothing rewrote something all the same.
function touched {
    snapshot | awk '$1 == "file" { print $2 }' | while IFS= read -r f; do
        stat -c '%n %Y %i' "$f"
    done
}

function save {
    snapshot >"$STATE/$1.snap"
    touched >"$STATE/$1.touch"
}

# same_as NAME: the state now is the saved snapshot NAME (differences go to DIFF).
DIFF=""
function same_as {
    DIFF=$(snapshot | diff "$STATE/$1.snap" - | grep '^[<>]' | head -n 6 | tr '\n' ' ')
    [ -z "$DIFF" ]
}

function untouched_since {
    DIFF=$(touched | diff "$STATE/$1.touch" - | grep '^[<>]' | head -n 6 | tr '\n' ' ')
    [ -z "$DIFF" ]
}

# no_duplicate_lines: no file that can load or configure toa repeats a line.
function no_duplicate_lines {
    local f dup
    for f in /etc/modules /etc/modules-load.d/* /etc/modprobe.d/* /etc/rc.local /etc/rc.d/rc.local; do
        [ -f "$f" ] || continue
        dup=$(grep -v '^[[:space:]]*\(#.*\)\{0,1\}$' "$f" | sort | uniq -d)
        if [ -n "$dup" ]; then
            DIFF="$f repeats: $dup"
            return 1
        fi
    done
}

# boot_entries: how many places load toa at boot.
function boot_entries {
    local n=0 f
    for f in /etc/modules /etc/modules-load.d/*.conf; do
        [ -f "$f" ] || continue
        n=$((n + $(grep -c '^[[:space:]]*toa[[:space:]]*$' "$f")))
    done
    for f in /etc/rc.local /etc/rc.d/rc.local; do
        [ -f "$f" ] || continue
        n=$((n + $(grep -c 'modprobe toa\|insmod .*toa\.ko' "$f")))
    done
    echo "$n"
}

function one_boot_entry {
    [ "$(boot_entries)" = 1 ]
}

function no_boot_entry {
    [ "$(boot_entries)" = 0 ]
}

function no_toa_module_file {
    [ -z "$(find /lib/modules -name 'toa.ko*' 2>/dev/null)" ] && ! modprobe -n toa 2>/dev/null
}

function dkms_on {
    if [ -e "$DKMS_OFF" ]; then mv "$DKMS_OFF" "$DKMS_BIN"; fi
}

# Without dkms on PATH, compile_install_toa.sh takes its plain (no DKMS) path.
function dkms_off {
    if [ -e "$DKMS_BIN" ]; then mv "$DKMS_BIN" "$DKMS_OFF"; fi
}

function dkms_installed {
    dkms status -m toa -k "$KREL" 2>/dev/null | grep -q installed
}

function dkms_empty {
    [ -z "$(dkms status -m toa 2>/dev/null)" ] && [ -z "$(find /usr/src -maxdepth 1 -name 'toa-*')" ]
}

# the installed prebuilt module is byte for byte the one index.json lists
function installed_is_published {
    local want have
    want=$(grep "\"release\":\"$KREL\"" "$STATE/index.json" | sed -n 's/.*"ko_sha256":"\([0-9a-f]*\)".*/\1/p' | head -n 1)
    have=$(sha256sum <"/lib/modules/$KREL/updates/toa.ko" | cut -c1-64)
    [ -n "$want" ] && [ "$want" = "$have" ]
}

INSTALL="curl -fsSL $BASE/install_toa.sh | bash"
COMPILE="curl -fsSL $BASE/compile_install_toa.sh | bash"

# ---------------------------------------------------------------- a service listening from boot

# nginx (nginx-light, enabled in the image) listens on port 80 from boot, so
# its listeners were open before any installer ran. `toa-lab request` (from
# the tar beside this script) plays an L4 proxy at PROXY_ADDR on a TUN device
# of its own and sends one GET to nginx with a TOA naming CLIENT; the address
# nginx logs in access.log is the one accept() gave it. It runs from STATE:
# /run, where the tar is unpacked, is mounted noexec.
TOA_LAB_BIN=$STATE/toa-lab
install -m 0755 "$LAB/toa-lab" "$TOA_LAB_BIN"
NGINX_LOG=/var/log/nginx/access.log
PROXY_ADDR=10.77.0.2
CLIENT_ADDR=198.51.100.7
CLIENT=$CLIENT_ADDR:40001
# Written to the kernel log right before the install: its messages follow it.
INSTALL_MARK="toa-lab: the install starts here"

function nginx_pid {
    systemctl show --property=MainPID --value nginx.service 2>/dev/null
}

# nginx_active: nginx.service is active (waiting while it still starts).
function nginx_active {
    local state=""
    for _ in $(seq 120); do
        state=$(systemctl is-active nginx.service 2>&1)
        [ "$state" = active ] && return 0
        sleep 0.5
    done
    DIFF="systemctl is-active nginx.service: $state"
    return 1
}

# same_nginx: nginx's MainPID is the one saved before the install.
function same_nginx {
    local before now
    before=$(cat "$STATE/nginx.pid" 2>/dev/null)
    now=$(nginx_pid)
    DIFF="MainPID ${before:-unknown} before the install, ${now:-none} now"
    [ -n "$before" ] && [ "$before" != 0 ] && [ "$before" = "$now" ]
}

# proxied_request CASE: GET /?toa-lab=CASE through the simulated proxy, with
# a TOA naming CLIENT (RC and OUT as run_case sets them).
function proxied_request {
    run_case "$1" "$TOA_LAB_BIN request --port 80 --client $CLIENT --path '/?toa-lab=$1'"
}

function http_answer {
    has_line 'HTTP/[0-9.]+ [0-9]{3}( .*)?'
}

function status_of_request {
    grep -m1 -E '^HTTP/[0-9.]+ [0-9]{3}' <<<"$OUT"
}

# logged_address CASE: the client address of access.log's line for the
# request of CASE (its first field; the request's path is the seventh).
function logged_address {
    awk -v path="/?toa-lab=$1" '$7 == path { addr = $1 } END { print addr }' "$NGINX_LOG" 2>/dev/null
}

# logged_as CASE ADDR: access.log shows ADDR for the request of CASE (DIFF:
# what it shows instead).
function logged_as {
    local got=""
    for _ in $(seq 20); do
        got=$(logged_address "$1")
        [ -n "$got" ] && break
        sleep 0.25
    done
    DIFF="${got:-no line for /?toa-lab=$1 in $NGINX_LOG}"
    [ "$got" = "$2" ]
}

# armed_in_install_output: the installer showed /proc/net/toa_stats with
# listen_armed_at_load >= 1 (ARMED_STATS: that number).
ARMED_STATS=""
function armed_in_install_output {
    ARMED_STATS=$(sed -n 's/^listen_armed_at_load[[:space:]]*:[[:space:]]*\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$STATE/install.out" | tail -n 1)
    DIFF="listen_armed_at_load: ${ARMED_STATS:-not in the output}"
    [ -n "$ARMED_STATS" ] && [ "$ARMED_STATS" -ge 1 ]
}

# armed_in_dmesg: since INSTALL_MARK the kernel log says toa.ko armed N >= 1
# listeners that were open at load (ARMED_LINE: that line).
ARMED_LINE=""
function armed_in_dmesg {
    local n
    ARMED_LINE=$(dmesg | sed -n "/$INSTALL_MARK/,\$p" | grep -oE 'armed [0-9]+ listeners that were open at load' | tail -n 1)
    n=$(grep -oE '[0-9]+' <<<"$ARMED_LINE")
    DIFF="dmesg: ${ARMED_LINE:-no 'armed N listeners that were open at load' after the install started}"
    [ -n "$n" ] && [ "$n" -ge 1 ]
}

# nginx_before_install: nginx, started at boot, logs the proxy for a TOA
# request while no toa is loaded (the kernel's answer).
function nginx_before_install {
    expect "@DIFF@" nginx_active
    nginx_pid >"$STATE/nginx.pid"
    proxied_request nginx_before_install
    expect "toa-lab request: exit status $RC" rc_is 0
    expect "no HTTP answer" http_answer
    expect "access.log: @DIFF@, expected the proxy $PROXY_ADDR" logged_as nginx_before_install "$PROXY_ADDR"
    verdict nginx_before_install "nginx active from boot (MainPID $(cat "$STATE/nginx.pid")), no toa: a request with TOA $CLIENT got '$(status_of_request)' and access.log shows $(logged_address nginx_before_install) (the proxy)"
}

# nginx_after_install: the same nginx process, never restarted, logs the
# client now that the installer loaded toa.ko, which armed its listeners.
function nginx_after_install {
    expect "toa is not loaded" loaded
    expect "@DIFF@" nginx_active
    expect "nginx was restarted: @DIFF@" same_nginx
    expect "the installer did not show listeners armed at load: @DIFF@" armed_in_install_output
    expect "toa.ko did not log listeners armed at load: @DIFF@" armed_in_dmesg
    proxied_request nginx_after_install
    expect "toa-lab request: exit status $RC" rc_is 0
    expect "no HTTP answer" http_answer
    expect "access.log: @DIFF@, expected the client $CLIENT_ADDR" logged_as nginx_after_install "$CLIENT_ADDR"
    verdict nginx_after_install "nginx MainPID $(nginx_pid) since boot, not restarted; $ARMED_LINE (toa_stats listen_armed_at_load ${ARMED_STATS:-?}); a request with TOA $CLIENT got '$(status_of_request)' and access.log shows $(logged_address nginx_after_install) (the client)"
}

# ---------------------------------------------------------------- stages

# A fresh guest: what must be refused first, then the install.
function stage_1 {
    dkms_off
    save pristine
    expect "toa is loaded before any install" not_loaded
    expect "boot configuration loads toa before any install" no_boot_entry
    verdict pristine "nothing of toa on the fresh guest"
    nginx_before_install

    curl -fsS "$BASE/truncated/install_toa.sh" -o "$STATE/truncated.sh"
    run_case truncated "curl -fsSL $BASE/truncated/install_toa.sh | bash"
    expect "it printed toa: lines, so it ran" lacks "toa:"
    expect "toa is loaded" not_loaded
    expect "the system changed: @DIFF@" same_as pristine
    verdict truncated "$(wc -c <"$STATE/truncated.sh") bytes piped to bash: exit $RC, nothing ran, nothing changed"

    run_case corrupt_tarball "$INSTALL -s -- --base-url $BASE/corrupt"
    expect "exit status 0" rc_not_zero
    expect "no checksum message" has "checksum mismatch for $DIST_NAME.tar.gz"
    expect "toa is loaded" not_loaded
    expect "the system changed: @DIFF@" same_as pristine
    verdict corrupt_tarball "exit $RC: $(grep -m1 -o 'checksum mismatch for [^:]*' <<<"$OUT")"

    run_case other_kernel "$INSTALL -s -- --base-url $BASE/vermagic"
    expect "exit status 0" rc_not_zero
    expect "sha256 of the tarball not verified first" has "verified sha256 of $DIST_NAME.tar.gz"
    expect "no vermagic refusal" has "but this machine runs $KREL: refusing to load it"
    expect "toa is loaded" not_loaded
    expect "the system changed: @DIFF@" same_as pristine
    verdict other_kernel "exit $RC: $(grep -m1 -o 'this toa.ko was built for kernel [^ ]*' <<<"$OUT")"

    run_case corrupt_source "$COMPILE -s -- --base-url $BASE/corrupt"
    expect "exit status 0" rc_not_zero
    expect "no checksum message" has "checksum mismatch for toa.tar.gz"
    expect "toa is loaded" not_loaded
    expect "the system changed: @DIFF@" same_as pristine
    verdict corrupt_source "exit $RC: $(grep -m1 -o 'checksum mismatch for [^:]*' <<<"$OUT")"

    # A release whose toa.ko loads but never rewrites (the test-only build):
    # the checksums and the vermagic are right, only the self-test sees it.
    run_case selftest_rollback "$INSTALL -s -- --base-url $BASE/norewrite"
    expect "exit status 0" rc_not_zero
    expect "the module was not loaded first" has "loaded toa"
    expect "the self-test did not run" has "proving toa on kernel $KREL: $TOA_BIN selftest"
    expect "no failing self-test check named" has "toa selftest failed: FAIL "
    expect "it did not say it undid the installation" has "undoing the installation"
    expect "toa is loaded" not_loaded
    expect "$TOA_BIN is left" no_toa_command
    expect "the system changed: @DIFF@" same_as pristine
    verdict selftest_rollback "exit $RC: $(grep -m1 -o 'toa selftest failed: FAIL [^:]*' <<<"$OUT"); unloaded, nothing left"

    curl -fsS "$BASE/index.json" -o "$STATE/index.json"
    echo "$INSTALL_MARK" >/dev/kmsg
    run_case install "$INSTALL"
    expect "exit status $RC" rc_is 0
    expect "toa is not loaded" loaded
    expect "/proc/net/toa_stats is not readable" stats_readable
    expect "no 'loaded toa' message" has "loaded toa"
    expect "toa_stats not shown" has "/proc/net/toa_stats:"
    expect "/etc/modules-load.d/toa.conf missing" test -f /etc/modules-load.d/toa.conf
    expect "the installed toa.ko is not the published one" installed_is_published
    expect "toa is loaded at boot from $(boot_entries) places" one_boot_entry
    expect "the toa command was not checked against SHA256SUMS" has "verified sha256 of toa-x86_64"
    expect "$TOA_BIN is not installed" toa_command_installed
    expect "the self-test did not run or did not pass" selftest_passed
    save installed
    verdict install "exit 0, lsmod: $(lsmod | grep '^toa ' | tr -s ' '), toa_stats readable, $TOA_BIN $(selftest_summary)"
    nginx_after_install
}

# After a reboot: loaded by itself; runs 2 and 3 change nothing; --uninstall.
function stage_2 {
    dkms_off
    expect "toa is not loaded after the reboot" loaded
    expect "/proc/net/toa_stats is not readable" stats_readable
    expect "the state differs from right after the install: @DIFF@" same_as installed
    verdict loaded_at_boot "lsmod: $(lsmod | grep '^toa ' | tr -s ' ')"

    local run
    for run in 2 3; do
        run_case "install_run_$run" "$INSTALL"
        expect "exit status $RC" rc_is 0
        expect "toa is not loaded" loaded
        expect "it did not say it was already installed" has "is already installed"
        expect "it reloaded toa" has "already loaded; nothing to reload"
        expect "files changed: @DIFF@" same_as installed
        expect "files rewritten: @DIFF@" untouched_since installed
        expect "duplicated lines: @DIFF@" no_duplicate_lines
        expect "toa is loaded at boot from $(boot_entries) places" one_boot_entry
        expect "it did not see the toa command up to date" has "the toa command $TOA_BIN is up to date"
        expect "the self-test did not run or did not pass" selftest_passed
        verdict "install_run_$run" "exit 0, no file changed or rewritten, one boot entry, no duplicated line, $(selftest_summary)"
    done

    run_case uninstall "$INSTALL -s -- --uninstall"
    expect "exit status $RC" rc_is 0
    expect "toa is still loaded" not_loaded
    expect "a toa.ko is left or modprobe still finds one" no_toa_module_file
    expect "boot configuration still loads toa" no_boot_entry
    expect "$TOA_BIN is left" no_toa_command
    expect "the state is not the fresh guest's: @DIFF@" same_as pristine
    verdict uninstall "exit 0: unloaded, module, $TOA_BIN, files and boot configuration removed"
}

# After another reboot: still gone; then the compile path, without and with DKMS.
function stage_3 {
    dkms_off
    expect "toa is loaded after uninstall and reboot" not_loaded
    expect "the state is not the fresh guest's: @DIFF@" same_as pristine
    verdict stays_uninstalled "not loaded after the reboot, nothing left"

    local started=$SECONDS
    run_case compile "$COMPILE"
    expect "exit status $RC" rc_is 0
    expect "toa is not loaded" loaded
    expect "/proc/net/toa_stats is not readable" stats_readable
    expect "it did not build" has "built toa.ko"
    expect "it did not say DKMS is missing" has "dkms is not installed"
    expect "/lib/modules/$KREL/updates/toa.ko missing" test -f "/lib/modules/$KREL/updates/toa.ko"
    expect "toa is loaded at boot from $(boot_entries) places" one_boot_entry
    expect "the self-test did not run or did not pass" selftest_passed
    save compiled
    verdict compile "built from toa.tar.gz with make in $((SECONDS - started)) s and loaded, srcversion $(cat /sys/module/toa/srcversion 2>/dev/null), $(selftest_summary)"

    if [ "$WITH_DKMS" != 1 ]; then
        return 0
    fi
    dkms_on
    started=$SECONDS
    run_case compile_dkms "$COMPILE"
    expect "exit status $RC" rc_is 0
    expect "toa is not loaded" loaded
    expect "/proc/net/toa_stats is not readable" stats_readable
    expect "not registered with DKMS" has "registered toa"
    expect "dkms status does not show toa installed for $KREL" dkms_installed
    expect "the plain updates/toa.ko is still there" test ! -e "/lib/modules/$KREL/updates/toa.ko"
    expect "toa is loaded at boot from $(boot_entries) places" one_boot_entry
    expect "duplicated lines: @DIFF@" no_duplicate_lines
    save dkms
    verdict compile_dkms "$((SECONDS - started)) s; $(dkms status -m toa 2>/dev/null | head -n 1)"
}

# DKMS's module after a reboot; a rerun changes nothing; --uninstall.
function stage_4 {
    dkms_on
    expect "toa is not loaded after the reboot" loaded
    expect "the state differs from right after the DKMS install: @DIFF@" same_as dkms
    verdict dkms_loaded_at_boot "$(modinfo -n toa 2>/dev/null)"

    run_case compile_dkms_again "$COMPILE"
    expect "exit status $RC" rc_is 0
    expect "toa is not loaded" loaded
    expect "it did not see the DKMS registration" has "already registered with DKMS"
    expect "files changed: @DIFF@" same_as dkms
    expect "files rewritten: @DIFF@" untouched_since dkms
    expect "duplicated lines: @DIFF@" no_duplicate_lines
    verdict compile_dkms_again "exit 0, no file changed or rewritten"

    run_case dkms_uninstall "$INSTALL -s -- --uninstall"
    expect "exit status $RC" rc_is 0
    expect "toa is still loaded" not_loaded
    expect "DKMS still has toa" dkms_empty
    expect "a toa.ko is left or modprobe still finds one" no_toa_module_file
    expect "boot configuration still loads toa" no_boot_entry
    expect "$TOA_BIN is left" no_toa_command
    expect "the state is not the fresh guest's: @DIFF@" same_as pristine
    verdict dkms_uninstall "exit 0: DKMS registration, module and boot configuration removed"
}

function stage_5 {
    expect "toa is loaded after uninstall and reboot" not_loaded
    expect "the state is not the fresh guest's: @DIFF@" same_as pristine
    verdict dkms_stays_uninstalled "not loaded after the reboot, nothing left"
}

# ---------------------------------------------------------------- the eBPF mode

BPF_UNIT=toa-bpf.service
BPF_PINS=/sys/fs/bpf/toa

function bpf_attached {
    [ -d "$BPF_PINS" ] && [ -n "$(find "$BPF_PINS" -mindepth 1 2>/dev/null | head -n 1)" ]
}

function bpf_detached {
    [ ! -e "$BPF_PINS" ]
}

function bpf_unit_enabled {
    systemctl is-enabled --quiet "$BPF_UNIT"
}

function bpf_unit_gone {
    [ ! -e "/etc/systemd/system/$BPF_UNIT" ] && ! systemctl is-enabled --quiet "$BPF_UNIT" 2>/dev/null
}

# status_says_ebpf: `toa status` exits 0 and names the eBPF mode.
STATUS=""
function status_says_ebpf {
    local rc=0
    STATUS=$("$TOA_BIN" status 2>&1) || rc=$?
    DIFF="exit $rc: $(head -n 3 <<<"$STATUS" | tr '\n' ' ')"
    [ "$rc" = 0 ] && grep -q 'eBPF' <<<"$STATUS"
}

# A fresh guest: install the eBPF mode.
function bpf_stage_1 {
    dkms_off
    save pristine
    expect "toa is loaded before any install" not_loaded
    expect "the eBPF mode is attached before any install" bpf_detached
    verdict pristine "nothing of toa on the fresh guest"

    run_case bpf_install "$INSTALL -s -- --mode bpf"
    expect "exit status $RC" rc_is 0
    expect "toa.ko is loaded" not_loaded
    expect "nothing pinned under $BPF_PINS" bpf_attached
    expect "$BPF_UNIT is not enabled" bpf_unit_enabled
    expect "/etc/toa/bpf.env missing" test -f /etc/toa/bpf.env
    expect "$TOA_BIN is not installed" toa_command_installed
    expect "the toa command was not checked against SHA256SUMS" has "verified sha256 of toa-x86_64"
    expect "the self-test did not run or did not pass" selftest_passed
    expect "toa status does not say eBPF: @DIFF@" status_says_ebpf
    save bpf_installed
    verdict bpf_install "exit 0, $(find "$BPF_PINS" -mindepth 1 | wc -l) pins under $BPF_PINS, $BPF_UNIT enabled, $(selftest_summary)"
}

# After a reboot: the unit attached it again; a rerun changes nothing; --uninstall.
function bpf_stage_2 {
    dkms_off
    expect "$BPF_UNIT is not active: $(systemctl is-active "$BPF_UNIT" 2>&1)" systemctl is-active --quiet "$BPF_UNIT"
    expect "nothing pinned under $BPF_PINS after the reboot" bpf_attached
    expect "toa status does not say eBPF: @DIFF@" status_says_ebpf
    expect "toa.ko is loaded" not_loaded
    run_case bpf_selftest_after_boot "$TOA_BIN selftest"
    expect "toa selftest failed after the reboot (exit $RC)" rc_is 0
    expect "the state differs from right after the install: @DIFF@" same_as bpf_installed
    verdict bpf_restored_at_boot "$BPF_UNIT active, $(find "$BPF_PINS" -mindepth 1 | wc -l) pins, toa status: $(grep -m1 -i 'ebpf' <<<"$STATUS"), selftest: $(grep -m1 -oE '[0-9]+ passed, [0-9]+ failed' <<<"$OUT")"

    run_case bpf_install_again "$INSTALL -s -- --mode bpf"
    expect "exit status $RC" rc_is 0
    expect "it did not see the mode attached already" has "nothing to reload"
    expect "files changed: @DIFF@" same_as bpf_installed
    expect "files rewritten: @DIFF@" untouched_since bpf_installed
    expect "the self-test did not run or did not pass" selftest_passed
    verdict bpf_install_again "exit 0, no file changed or rewritten, $(selftest_summary)"

    run_case bpf_uninstall "$INSTALL -s -- --uninstall"
    expect "exit status $RC" rc_is 0
    expect "still pinned: $(find "$BPF_PINS" -mindepth 1 2>/dev/null | head -n 3 | tr '\n' ' ')" bpf_detached
    expect "$BPF_UNIT is left" bpf_unit_gone
    expect "$TOA_BIN is left" no_toa_command
    expect "the state is not the fresh guest's: @DIFF@" same_as pristine
    verdict bpf_uninstall "exit 0: detached, unit, settings and $TOA_BIN removed"
}

function bpf_stage_3 {
    expect "attached after uninstall and reboot" bpf_detached
    expect "$BPF_UNIT is left" bpf_unit_gone
    expect "toa.ko is loaded" not_loaded
    expect "the state is not the fresh guest's: @DIFF@" same_as pristine
    verdict bpf_stays_uninstalled "nothing attached after the reboot, nothing left"
}

# The guest reaches only the host's test server: an address on QEMU's user
# network and no default route.
function network {
    local dev
    modprobe virtio_net 2>/dev/null
    for _ in $(seq 100); do
        [ -e /sys/class/net/eth0 ] && break
        sleep 0.2
    done
    dev=eth0
    ip link set lo up
    ip link set "$dev" up
    ip addr add 10.0.2.15/24 dev "$dev" 2>/dev/null
    for _ in $(seq 50); do
        curl -fsS -o /dev/null --max-time 2 "$BASE/index.json" && return 0
        sleep 0.2
    done
    return 1
}

stty -F "$RESULTS" raw -echo 2>/dev/null
result "STAGE $STAGE kernel=$KREL uptime=$(cut -d' ' -f1 /proc/uptime)"
progress "stage $STAGE on $KREL"
if ! network; then
    result "CHECK $STAGE network FAIL the test server $BASE is not reachable"
elif [ "${MODE:-kmod}" = bpf ] && declare -F "bpf_stage_$STAGE" >/dev/null; then
    "bpf_stage_$STAGE"
elif [ "${MODE:-kmod}" != bpf ] && declare -F "stage_$STAGE" >/dev/null; then
    "stage_$STAGE"
else
    result "CHECK $STAGE stage FAIL no stage '$STAGE' in this script"
fi
sync
result "END $STAGE"
