#!/bin/bash
# install_toa.sh: makes accept() and getpeername() return the real client
# address an L4 proxy put in a TCP option: with toa.ko, the kernel module, or
# with the eBPF mode (kernels >= 5.10, no module).
#
#   curl -fsSL @TOA_BASE_URL@/install_toa.sh | sudo bash
#   curl -fsSL @TOA_BASE_URL@/install_toa.sh | sudo bash -s -- --help
#
# toa.ko: it picks the prebuilt module for the running kernel from index.json,
# checks its sha256 and vermagic, loads it, installs it and keeps it loaded at
# boot. The eBPF mode: it installs the toa command, attaches with
# `toa bpf load` and enables a systemd unit that attaches again at boot.
# Nothing runs until the last line, so a download cut short does nothing.

set -u
PROG=install_toa.sh

# @TOA_LIB@

function usage {
    cat <<EOF
$PROG $TOA_VERSION: install toa for the running kernel (toa.ko or the eBPF mode)

Usage: curl -fsSL $TOA_DEFAULT_BASE_URL/$PROG | sudo bash -s -- [OPTIONS]

toa.ko (--mode kmod): downloads the prebuilt toa.ko for this kernel
($TOA_DEFAULT_BASE_URL/index.json), verifies its sha256 and vermagic, loads it,
installs it under /lib/modules/\$(uname -r)/updates/ and loads it at every boot
($MODULES_LOAD_CONF with systemd, rc.local otherwise).
The eBPF mode (--mode bpf, kernels >= 5.10 with systemd): installs the toa
command as $TOA_BIN, attaches with 'toa bpf load', writes its settings to
$BPF_ENV and enables $BPF_UNIT_PATH, which attaches again at boot.
Either way it runs 'toa selftest' and undoes everything if that fails. Only
one mode is ever active: installing one removes the other. A toa.ko that is
pinned (a socket took kTLS or another TCP ULP) cannot be unloaded before the
next reboot: an upgrade then takes over at that reboot.

Options:
  --mode auto|kmod|bpf      auto (the default): the mode installed already; else toa.ko when a
                            prebuilt module matches and this kernel loads unsigned modules
                            (no Secure Boot, lockdown or modules_disabled); else the eBPF mode
                            when the kernel accepts it; else the offer to build toa.ko here
  --dry-run                 print every action, change nothing
  --uninstall               remove toa whichever mode is installed: unload or detach it, remove
                            its files, unit and boot configuration, and the toa command (a
                            pinned toa.ko, see 'toa status', stays loaded until the next reboot)
  --trusted-proxies CIDRS   accept TOA only from these proxies, e.g. 10.0.0.0/8,2001:db8::/32
                            (written to $MODPROBE_CONF, or $BPF_ENV in the eBPF mode)
  --ports LIST              the eBPF mode: listener ports that honour TOA, e.g. 80,443,8000-8099
                            ('' for every port, the default)
  --formats MASK            the eBPF mode: TOA layouts honoured (0x1 254/8, 0x2 254/20,
                            0x4 253/20, 0x8 200/8; default 0xf)
  --capture WAY             the eBPF mode: auto (default), fexit or sock-ops (see toa bpf load --help)
  --cgroup PATH             the eBPF mode: only the processes of this cgroup v2 get clients (and pay
                            for the hook), e.g. /system.slice/nginx.service or a slice that outlives
                            its services' restarts; '/' for every process (the default)
                            The eBPF mode keeps each setting an earlier install wrote to $BPF_ENV
                            unless its option is given again.
  --compile                 no prebuilt module for this kernel: build it here with
                            compile_install_toa.sh (installs gcc, make, kernel headers)
  --base-url URL            where index.json and the tarballs are (default $TOA_DEFAULT_BASE_URL)
  --no-selftest             install the toa command but do not run 'toa selftest' after loading
  --version                 print the version
  --help                    print this help
EOF
}

# The command that builds toa here instead.
function compile_command {
    local cmd="curl -fsSL $BASE_URL/compile_install_toa.sh | sudo bash -s -- --base-url $BASE_URL"
    if [ "$TRUSTED_PROXIES_SET" = 1 ]; then
        cmd="$cmd --trusted-proxies $TRUSTED_PROXIES"
    fi
    printf '%s\n' "$cmd"
}

# run_compile: fetches compile_install_toa.sh from the base URL, checks it
# against SHA256SUMS and runs it with the same options.
function run_compile {
    refuse_bpf_settings
    fetch "$BASE_URL/SHA256SUMS" "$TMP_DIR/SHA256SUMS" "the checksum list"
    sums_lookup "$TMP_DIR/SHA256SUMS" compile_install_toa.sh
    fetch "$BASE_URL/compile_install_toa.sh" "$TMP_DIR/compile_install_toa.sh" "compile_install_toa.sh"
    verify_sha256 "$TMP_DIR/compile_install_toa.sh" "$SUM" compile_install_toa.sh
    set -- --base-url "$BASE_URL"
    [ "$NO_SELFTEST" = 0 ] || set -- "$@" --no-selftest
    if [ "$DRY_RUN" = 1 ]; then
        set -- "$@" --dry-run
    fi
    if [ "$TRUSTED_PROXIES_SET" = 1 ]; then
        set -- "$@" --trusted-proxies "$TRUSTED_PROXIES"
    fi
    say "building toa.ko from source for $KREL with compile_install_toa.sh"
    bash "$TMP_DIR/compile_install_toa.sh" "$@"
}

function interactive {
    [ -t 1 ] && { : </dev/tty; } 2>/dev/null
}

# No module for this kernel in the index: say so, then build it here when asked.
function no_prebuilt {
    local line others=""
    while IFS= read -r line; do
        case $line in
            "{\"release\":"*"\"arch\":\"$KARCH\""*"\"distro\":\"$DISTRO_KEY\""*)
                json_field "$line" release
                others="${others:+$others, }$FIELD"
                ;;
        esac
    done <"$TMP_DIR/index.json"
    say "there is no prebuilt toa.ko for kernel $KREL ($KARCH, $OS_NAME) in $BASE_URL/index.json"
    if [ -n "$others" ]; then
        say "prebuilt modules for $DISTRO_KEY exist for kernels: $others"
    fi
    if [ "$COMPILE" = 1 ]; then
        run_compile
        return
    fi
    if interactive; then
        local answer=""
        printf 'toa: build toa.ko from source on this machine now (installs gcc, make and the headers for %s)? [y/N] ' "$KREL"
        read -r answer </dev/tty || answer=""
        case $answer in
            y | Y | yes | YES)
                run_compile
                return
                ;;
        esac
    fi
    err "no prebuilt toa.ko for kernel $KREL; nothing was changed" \
        "build it on this machine from source (installs gcc, make and the headers for $KREL):" \
        "  $(compile_command)" \
        "or run this installer again with --compile${others:+, or boot one of the kernels listed above}"
}

# json_field LINE KEY: sets FIELD to KEY's string value in one index.json line.
function json_field {
    local pat="\"$2\":\""
    case $1 in
        *"$pat"*) ;;
        *)
            FIELD=""
            return 1
            ;;
    esac
    FIELD=${1#*"$pat"}
    FIELD=${FIELD%%\"*}
}

# find_prebuilt: sets ENTRY to the index line for this kernel (release, arch,
# and uname -v where the index gives one); prefers this distro's entry.
ENTRY=""
KVER=""
function find_prebuilt {
    local line entry_distro=""
    KVER=$(uname -v) || KVER=""
    if ! grep -q '^{"format":1,' "$TMP_DIR/index.json"; then
        err "$BASE_URL/index.json is not a toa module index this installer reads (format 1); nothing was changed" \
            "check --base-url, or get the installer that belongs to that index: $BASE_URL/$PROG"
    fi
    while IFS= read -r line; do
        case $line in
            "{\"release\":\"$KREL\",\"arch\":\"$KARCH\","*) ;;
            *) continue ;;
        esac
        json_field "$line" uname_v || continue
        if [ -n "$FIELD" ] && [ "$FIELD" != "$KVER" ]; then
            continue
        fi
        json_field "$line" distro || continue
        if [ -z "$ENTRY" ] || { [ "$FIELD" = "$DISTRO_KEY" ] && [ "$entry_distro" != "$DISTRO_KEY" ]; }; then
            ENTRY=$line
            entry_distro=$FIELD
        fi
    done <"$TMP_DIR/index.json"
}

# entry_field KEY PATTERN-CHECK: FIELD from ENTRY, which must be well formed.
function entry_field {
    if ! json_field "$ENTRY" "$1" || [ -z "$FIELD" ]; then
        err "the index entry for $KREL has no '$1'; the index is damaged, nothing was changed" \
            "report it to whoever publishes $BASE_URL"
    fi
}

# install_prebuilt: download, verify, load, install, persist.
function install_prebuilt {
    local tarball tarball_sha ko ko_sha distro
    entry_field tarball
    tarball=$FIELD
    entry_field tarball_sha256
    tarball_sha=$FIELD
    entry_field ko
    ko=$FIELD
    entry_field ko_sha256
    ko_sha=$FIELD
    entry_field distro
    distro=$FIELD
    case $tarball in
        -* | .* | *[!A-Za-z0-9._-]* | *[!z]) err "the index names an unexpected tarball '$tarball'; nothing was changed" ;;
    esac
    case /$ko/ in
        */../* | */./* | *//* | *[!A-Za-z0-9._+~/-]*) err "the index names an unexpected module path '$ko'; nothing was changed" ;;
    esac
    say "found toa.ko for $KREL ($distro) in $tarball"

    fetch "$BASE_URL/$tarball" "$TMP_DIR/$tarball" "$tarball"
    verify_sha256 "$TMP_DIR/$tarball" "$tarball_sha" "$tarball"
    mkdir "$TMP_DIR/x" || err "could not create $TMP_DIR/x"
    if ! tar -xzf "$TMP_DIR/$tarball" -C "$TMP_DIR/x" "$ko"; then
        err "could not extract $ko from $tarball; nothing was changed" "report it to whoever publishes $BASE_URL"
    fi
    verify_sha256 "$TMP_DIR/x/$ko" "$ko_sha" "$ko"
    check_vermagic "$TMP_DIR/x/$ko"
    check_module_signing "$TMP_DIR/x/$ko"
    refuse_bpf_settings

    leave_bpf_mode
    # A module DKMS built earlier (compile_install_toa.sh) would shadow this one.
    if check_cmd dkms && [ -n "$(dkms_versions)" ]; then
        say "toa is registered with DKMS (by compile_install_toa.sh); removing that so the prebuilt module is the only toa.ko"
        dkms_remove_all
    fi
    write_trusted_proxies "$TMP_DIR/x/$ko"
    PLACE=copy
    load_module "$TMP_DIR/x/$ko"
    persist
    prove_install
    show_status
    if [ "$DRY_RUN" = 0 ] && [ "$KMOD_PINNED" = 1 ]; then
        say "done: toa $TOA_VERSION is installed and loads at every boot of kernel $KREL; the new toa.ko takes over at the next reboot, and until then the running toa.ko, which passed the self-test, serves: $PINNED_WHY"
        say "to remove toa: curl -fsSL $BASE_URL/$PROG | sudo bash -s -- --uninstall"
    elif [ "$DRY_RUN" = 0 ]; then
        say "done: toa $TOA_VERSION is loaded and will be loaded at every boot of kernel $KREL"
        say "after a kernel upgrade, run this installer again for the new kernel (or use compile_install_toa.sh with dkms installed, which rebuilds toa by itself)"
        say "to remove toa: curl -fsSL $BASE_URL/$PROG | sudo bash -s -- --uninstall"
    fi
}

# ---------------------------------------------------------------- the eBPF mode

# bpf_unit_text: the unit that restores the eBPF mode at boot
# (dist/toa-bpf.service, put here when the scripts are rendered).
function bpf_unit_text {
    cat <<'TOA_UNIT'
@TOA_BPF_UNIT@
TOA_UNIT
}

# bpf_possible: the eBPF mode can be tried here; sets WHY_NOT when not.
WHY_NOT=""
function bpf_possible {
    WHY_NOT=""
    if ! kernel_at_least 5 10; then
        WHY_NOT="the eBPF mode needs kernel 5.10 or newer, and this machine runs $KREL"
    elif [ ! -d "$ROOT/run/systemd/system" ]; then
        WHY_NOT="the eBPF mode needs systemd, whose unit attaches it again at every boot, and this machine does not run systemd"
    fi
    [ -z "$WHY_NOT" ]
}

# kernel_at_least MAJOR MINOR: the running kernel is MAJOR.MINOR or newer.
function kernel_at_least {
    local major minor
    major=${KREL%%.*}
    minor=${KREL#*.}
    minor=${minor%%[!0-9]*}
    case $major.$minor in
        .* | *. | *[!0-9.]*) return 1 ;;
    esac
    [ "$major" -gt "$1" ] || { [ "$major" = "$1" ] && [ "$minor" -ge "$2" ]; }
}

# bpf_setting NAME SET VALUE: one TOA_NAME=VALUE line into NEW_VARS: the
# option's value when given (SET=1; an empty value drops the line, so the
# default applies), else the line an earlier install wrote, else none.
NEW_VARS=()
function bpf_setting {
    local line
    if [ "$2" = 1 ]; then
        [ -z "$3" ] || NEW_VARS+=("TOA_$1=$3")
        return 0
    fi
    for line in ${BPF_VARS[@]+"${BPF_VARS[@]}"}; do
        case $line in
            "TOA_$1="*) NEW_VARS+=("$line") ;;
        esac
    done
}

# bpf_settings: NEW_VARS, the TOA_* lines $BPF_ENV is to hold: the options
# given now over what an earlier install wrote (kept unless told otherwise),
# and any other TOA_* line of that file as it was.
function bpf_settings {
    local line
    bpf_env_vars
    NEW_VARS=()
    bpf_setting TRUSTED_PROXIES "$TRUSTED_PROXIES_SET" "$TRUSTED_PROXIES"
    bpf_setting PORTS "$PORTS_SET" "$PORTS"
    bpf_setting FORMATS "$FORMATS_SET" "$FORMATS"
    bpf_setting CAPTURE "$CAPTURE_SET" "$CAPTURE"
    bpf_setting CGROUP "$CGROUP_SET" "$CGROUP"
    for line in ${BPF_VARS[@]+"${BPF_VARS[@]}"}; do
        case $line in
            TOA_TRUSTED_PROXIES=* | TOA_PORTS=* | TOA_FORMATS=* | TOA_CAPTURE=* | TOA_CGROUP=*) ;;
            *) NEW_VARS+=("$line") ;;
        esac
    done
}

# write_bpf_env: the settings go to $BPF_ENV, which the unit reads; with no
# setting option given an existing file is kept as it is. Sets BPF_CHANGED=1
# on a change.
BPF_CHANGED=0
function write_bpf_env {
    local line text="# toa eBPF mode settings, read by $BPF_UNIT_PATH (toa bpf load)
# (written by $PROG --mode bpf; undo: install_toa.sh --uninstall)"
    bpf_settings
    if [ "$TRUSTED_PROXIES_SET$PORTS_SET$FORMATS_SET$CAPTURE_SET$CGROUP_SET" = 00000 ] && [ -f "$ROOT$BPF_ENV" ]; then
        say "keeping the eBPF mode's settings in $BPF_ENV"
        return 0
    fi
    case " ${NEW_VARS[*]-} " in
        *" TOA_TRUSTED_PROXIES="*) ;;
        *) text="$text
# No TOA_TRUSTED_PROXIES: TOA from any source is honoured (--trusted-proxies limits it)." ;;
    esac
    for line in ${NEW_VARS[@]+"${NEW_VARS[@]}"}; do
        text="$text
$line"
    done
    put_file "$ROOT$BPF_ENV" "$text"
    if [ "$CHANGED" = 1 ]; then
        BPF_CHANGED=1
        if [ "$DRY_RUN" = 0 ]; then
            say "wrote the eBPF mode's settings to $BPF_ENV: ${NEW_VARS[*]-(defaults)}"
        fi
    else
        say "$BPF_ENV has these settings already"
    fi
}

# bpf_env_vars: the TOA_*=VALUE lines of $BPF_ENV, as the unit passes them.
BPF_VARS=()
function bpf_env_vars {
    local line
    BPF_VARS=()
    [ -f "$ROOT$BPF_ENV" ] || return 0
    while IFS= read -r line; do
        case $line in
            TOA_[A-Z_]*=*) BPF_VARS+=("$line") ;;
        esac
    done <"$ROOT$BPF_ENV"
}

# install_bpf_unit: the unit written and enabled (BPF_CHANGED=1 on a change).
function install_bpf_unit {
    put_file "$ROOT$BPF_UNIT_PATH" "$(bpf_unit_text)"
    if [ "$CHANGED" = 1 ]; then
        BPF_CHANGED=1
        act systemctl daemon-reload || err "systemctl daemon-reload failed after writing $BPF_UNIT_PATH" \
            "run 'systemctl daemon-reload' by hand and check its output, then run this again"
        if [ "$DRY_RUN" = 0 ]; then
            say "wrote $BPF_UNIT_PATH"
        fi
    fi
    if systemctl is-enabled --quiet "$BPF_UNIT" 2>/dev/null; then
        say "$BPF_UNIT is enabled: it attaches the eBPF mode at every boot"
        return 0
    fi
    BPF_CHANGED=1
    act systemctl enable --quiet "$BPF_UNIT" ||
        err "systemctl enable $BPF_UNIT failed, so the eBPF mode would not come back after a reboot" \
            "its message is above; fix the cause and run this again"
    if [ "$DRY_RUN" = 0 ]; then
        say "enabled $BPF_UNIT: it attaches the eBPF mode at every boot, before the network is up"
    fi
}

# bpf_load: `toa bpf load` with the unit's settings. Returns non-zero when
# the kernel (or anything else) refused, its message in $TMP_DIR/bpf-load.out.
function bpf_load {
    bpf_env_vars
    if [ "$DRY_RUN" = 1 ]; then
        # What the file would hold: it was not written.
        bpf_settings
        BPF_VARS=(${NEW_VARS[@]+"${NEW_VARS[@]}"})
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would run: env ${BPF_VARS[*]} $TOA_BIN bpf load"
        return 0
    fi
    if ! env ${BPF_VARS[@]+"${BPF_VARS[@]}"} "$ROOT$TOA_BIN" bpf load >"$TMP_DIR/bpf-load.out" 2>&1; then
        return 1
    fi
    sed 's/^/  /' "$TMP_DIR/bpf-load.out"
    say "attached the eBPF mode ($TOA_BIN bpf load)"
}

# bpf_runs: the pinned programs run ('toa status' finds each link attached
# where a load puts it); pins alone do not say so: a link can be detached
# under its pin.
function bpf_runs {
    if "$ROOT$TOA_BIN" status --sample 0.1 >"$TMP_DIR/bpf-status.out" 2>&1; then
        return 0
    fi
    say "the eBPF mode is pinned under $BPF_PINS, but toa status reports a problem: loading it again"
    grep 'FAIL' "$TMP_DIR/bpf-status.out" | sed 's/^ */  /' || true
    return 1
}

# install_bpf: the eBPF mode, start to end. With --mode auto (FALLBACK=1) a
# kernel that refuses the programs is not an error: everything this did is
# undone and it returns 1, so that the caller tries the next way.
function install_bpf {
    local fallback=${1:-0} status=0 before=""
    if ! bpf_possible; then
        if [ "$fallback" = 1 ]; then
            say "not the eBPF mode: $WHY_NOT"
            return 1
        fi
        err "$WHY_NOT; nothing was changed" "use toa.ko instead: run this again with --mode kmod (or without --mode)"
    fi
    # One mode at a time, and a pinned toa.ko cannot be unloaded before a reboot.
    if loaded_toa && toa_pinned; then
        if [ "$fallback" = 1 ]; then
            say "not the eBPF mode: toa.ko is loaded and stays loaded until the next reboot, $PINNED_WHY"
            return 1
        fi
        err "the eBPF mode cannot be installed now: toa.ko is loaded and cannot be unloaded before the next reboot, $PINNED_WHY; only one mode may be active, so nothing was changed" \
            "to switch to the eBPF mode: remove toa.ko with '--uninstall' (nothing loads it at boot any more), reboot, then run this again with --mode bpf"
    fi
    say "installing the eBPF mode (no kernel module) for kernel $KREL"
    if [ -f "$ROOT$TOA_BIN" ]; then
        sha256_of "$ROOT$TOA_BIN"
        before=$SHA
    fi
    # A subshell, so that what it fails on is reported here.
    ( install_toa_command ) || status=$?
    if [ "$status" = 3 ] && [ "$fallback" = 1 ]; then
        say "not the eBPF mode: $BASE_URL has no toa command for $KARCH to load it"
        return 1
    elif [ "$status" = 3 ]; then
        err "the eBPF mode is loaded by the toa command, and $BASE_URL has none for $KARCH; nothing was changed" \
            "use toa.ko instead: run this again with --mode kmod"
    elif [ "$status" != 0 ]; then
        exit "$status"
    fi
    # Another toa command may load the programs differently: load again.
    if [ "$DRY_RUN" = 0 ]; then
        sha256_of "$ROOT$TOA_BIN"
        [ "$SHA" = "$before" ] || BPF_CHANGED=1
    fi
    if kmod_mode_installed; then
        say "toa.ko is installed here; removing it first, so that only the eBPF mode is active"
        remove_kmod_mode
        BPF_CHANGED=1
        if [ "$KMOD_PINNED" = 1 ]; then
            # It pinned itself since the check above.
            err "toa.ko could not be unloaded: $PINNED_WHY; it stays loaded until the next reboot, and only one mode may be active, so the eBPF mode was not attached" \
                "toa.ko's files and boot configuration were removed (nothing loads it at boot any more): reboot, then run this again with --mode bpf"
        fi
    fi
    write_bpf_env
    warn_unit_cgroup
    install_bpf_unit
    if [ "$BPF_CHANGED" = 0 ] && [ -d "$ROOT$BPF_PINS" ] && bpf_runs; then
        say "the eBPF mode is attached with these settings already; nothing to reload"
    elif ! bpf_load; then
        sed 's/^/  /' "$TMP_DIR/bpf-load.out" >&2
        local why
        why=$(grep -m 1 -i 'error' "$TMP_DIR/bpf-load.out") ||
            why=$(grep -m 1 -v '^[[:space:]]*$' "$TMP_DIR/bpf-load.out") || why="(no message)"
        if [ "$fallback" = 1 ]; then
            warn "this kernel does not take the eBPF mode: $why"
            say "undoing the eBPF mode's installation"
            uninstall >/dev/null
            return 1
        fi
        undo_install "toa bpf load failed: $why"
    fi
    run_selftest
    show_bpf_status
    if [ "$DRY_RUN" = 0 ]; then
        say "done: the eBPF mode is attached and $BPF_UNIT attaches it at every boot"
        say "connections accepted before it was attached keep the proxy's address; restart services that were running to cover all"
        say "to remove toa: curl -fsSL $BASE_URL/$PROG | sudo bash -s -- --uninstall"
    fi
}

# warn_unit_cgroup: a service's (or scope's) own cgroup does not exist at
# boot when $BPF_UNIT loads (before the network, so before the service) and
# goes, with the programs in it, whenever the service stops.
function warn_unit_cgroup {
    local line
    bpf_settings
    for line in ${NEW_VARS[@]+"${NEW_VARS[@]}"}; do
        case $line in
            TOA_CGROUP=*.service | TOA_CGROUP=*.scope | TOA_CGROUP=*.service/ | TOA_CGROUP=*.scope/)
                warn "${line#TOA_CGROUP=} is a service's own cgroup: it does not exist yet when $BPF_UNIT loads at boot (the unit then fails), and systemd removes it, with the programs, whenever the service stops; prefer the slice it runs in (e.g. --cgroup /system.slice), which lasts"
                ;;
        esac
    done
}

function show_bpf_status {
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: nothing was changed"
        return 0
    fi
    say "$TOA_BIN status:"
    "$ROOT$TOA_BIN" status || warn "toa status reports a problem (above)"
}

# modules_loadable: a prebuilt module can be loaded here; sets WHY_NOT when not.
function modules_loadable {
    WHY_NOT=""
    if modules_disabled; then
        WHY_NOT="this kernel loads no more modules (kernel.modules_disabled=1)"
        return 1
    fi
    module_signing_reasons
    if [ -n "$REASONS" ]; then
        WHY_NOT="this kernel loads only signed modules ($REASONS)"
        return 1
    fi
}

# main_auto: the mode installed already, else the best way this machine has.
function main_auto {
    if bpf_mode_installed; then
        say "the eBPF mode is installed here; keeping it (--mode kmod switches to toa.ko)"
        install_bpf
        return
    fi
    if [ -n "$ENTRY" ] && modules_loadable; then
        say "mode: toa.ko (a prebuilt module matches kernel $KREL)"
        install_prebuilt
        return
    fi
    if [ -n "$ENTRY" ]; then
        say "the prebuilt toa.ko is not used: $WHY_NOT; trying the eBPF mode"
    else
        say "no prebuilt toa.ko for kernel $KREL; trying the eBPF mode"
    fi
    if install_bpf 1; then
        return
    fi
    if [ -n "$ENTRY" ]; then
        # Explains signing, or loads a signed module.
        install_prebuilt
    else
        no_prebuilt
    fi
}

function main {
    parse_args "$@"
    need_root
    need_common_tools
    make_tmp
    if [ "$UNINSTALL" = 1 ]; then
        uninstall
        return
    fi
    detect_system
    say "this machine: $OS_NAME, kernel $KREL, $KARCH"
    warn_plain_http
    if [ "$MODE" = bpf ]; then
        install_bpf
        return
    fi
    fetch "$BASE_URL/index.json" "$TMP_DIR/index.json" "the module index"
    find_prebuilt
    if [ "$MODE" = auto ] && [ "$COMPILE" = 0 ]; then
        main_auto
        return
    fi
    if [ -z "$ENTRY" ]; then
        no_prebuilt
        return
    fi
    install_prebuilt
}

main "$@" || exit 1
