# shellcheck shell=bash
# Shared by install_toa.sh and compile_install_toa.sh: `cargo xtask installers`
# puts this file into both at their library marker line. It only defines
# variables and functions; nothing here runs by itself.

TOA_VERSION='@TOA_VERSION@'
TOA_DEFAULT_BASE_URL='@TOA_BASE_URL@'

# Test hook, empty in production: TOA_ROOT is put in front of every path these
# scripts read or write (/etc, /lib/modules, /proc, /sys, /run, /usr/src), so
# tests can run them against a scratch directory, with stub commands (modprobe,
# depmod, uname, ...) first in PATH. Nothing else changes when it is set.
ROOT="${TOA_ROOT:-}"

# The line kept in rc.local on systems without systemd (matched exactly).
RC_LINE='modprobe toa || true # toa: load at boot (undo: install_toa.sh --uninstall)'
MODULES_LOAD_CONF=/etc/modules-load.d/toa.conf
MODPROBE_CONF=/etc/modprobe.d/toa.conf
# Where the earlier manual install steps put the module and what they appended to rc.local.
LEGACY_KO_REL=kernel/net/netfilter/ipvs/toa.ko
LEGACY_RC_RE='^[[:space:]]*insmod[[:space:]]+/lib/modules/[^[:space:]]+/toa\.ko[[:space:]]*$'
EFI_SECURE_BOOT_VAR=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
# The eBPF mode: its settings, the unit that restores it at boot, its pins.
BPF_ENV=/etc/toa/bpf.env
BPF_UNIT=toa-bpf.service
BPF_UNIT_PATH=/etc/systemd/system/toa-bpf.service
BPF_PINS=/sys/fs/bpf/toa

# Options.
DRY_RUN=0
UNINSTALL=0
COMPILE=0
BASE_URL=""
TRUSTED_PROXIES=""
TRUSTED_PROXIES_SET=0
# The eBPF mode's other settings (--ports, --formats, --capture, --cgroup): *_SET=1 when given.
PORTS=""
PORTS_SET=0
FORMATS=""
FORMATS_SET=0
CAPTURE=""
CAPTURE_SET=0
CGROUP=""
CGROUP_SET=0
NO_SELFTEST=0
# auto, kmod or bpf (--mode); MODE_SET=1 when given.
MODE=auto
MODE_SET=0

# Filled in as the script runs.
TMP_DIR=""
KREL=""
KARCH=""
OS_ID=""
OS_VERSION=""
OS_NAME=""
DISTRO_KEY=""
FIELD=""
SUM=""
SHA=""
CHANGED=0
PARAMS_CHANGED=0
PLACE=copy
# How an installed module is known to be the one at hand: "bytes" (prebuilt
# modules are the same file) or "build" (a rebuild of the same source has the
# same srcversion and vermagic, though not the same bytes).
SAME_BY=bytes
DKMS_UNCHANGED=0

function say {
    printf 'toa: %s\n' "$*"
}

function warn {
    printf 'toa: warning: %s\n' "$*" >&2
}

# err HEADLINE [NEXT-STEP LINES...]: prints what failed and what to do, exits 1.
function err {
    printf 'toa: error: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do
        printf '  %s\n' "$line" >&2
    done
    exit 1
}

function check_cmd {
    command -v "$1" >/dev/null 2>&1
}

# need_cmd COMMAND PACKAGE
function need_cmd {
    if ! check_cmd "$1"; then
        err "this script needs '$1', which is not installed" \
            "install it (package '$2'), then run this again; nothing was changed"
    fi
}

# ensure COMMAND...: runs it, exits with a message naming it when it fails.
function ensure {
    if ! "$@"; then
        err "command failed: $*" "nothing after this step was done; fix the cause above and run this again"
    fi
}

# act COMMAND...: an action that changes the system; only printed under --dry-run.
function act {
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would run: $*"
        return 0
    fi
    "$@"
}

function need_common_tools {
    # kmod's tools live in sbin, which `su` without `-` leaves out of PATH.
    local dir
    for dir in /usr/sbin /sbin; do
        case ":$PATH:" in
            *":$dir:"*) ;;
            *) PATH=$PATH:$dir ;;
        esac
    done
    need_cmd uname coreutils
    need_cmd id coreutils
    need_cmd mktemp coreutils
    need_cmd sha256sum coreutils
    need_cmd sed sed
    need_cmd grep grep
    need_cmd tar tar
    need_cmd gzip gzip
    need_cmd modinfo kmod
    need_cmd modprobe kmod
    need_cmd rmmod kmod
    need_cmd depmod kmod
    if ! check_cmd curl && ! check_cmd wget; then
        err "this script needs curl or wget to download toa, and neither is installed" \
            "install one of them (package 'curl' or 'wget'), then run this again; nothing was changed"
    fi
}

function need_root {
    if [ "$DRY_RUN" = 1 ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        err "loading a kernel module needs root; nothing was changed" \
            "run it as root, e.g. with sudo: curl -fsSL $BASE_URL/$PROG | sudo bash" \
            "(add --dry-run to see what it would do without root)"
    fi
}

# parse_args "$@": the options both scripts share (--compile only for install_toa.sh).
function parse_args {
    while [ $# -gt 0 ]; do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --no-selftest) NO_SELFTEST=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --compile)
                if [ "$PROG" != install_toa.sh ]; then
                    err "unknown option '--compile' (see $PROG --help)"
                fi
                COMPILE=1
                ;;
            --version | -V)
                printf '%s (toa) %s\n' "$PROG" "$TOA_VERSION"
                exit 0
                ;;
            --help | -h)
                usage
                exit 0
                ;;
            --base-url)
                [ $# -ge 2 ] || err "--base-url needs a URL, e.g. --base-url https://example.com/toa"
                BASE_URL=$2
                shift
                ;;
            --base-url=*) BASE_URL=${1#--base-url=} ;;
            --mode)
                [ $# -ge 2 ] || err "--mode needs one of auto, kmod, bpf"
                MODE=$2
                MODE_SET=1
                shift
                ;;
            --mode=*)
                MODE=${1#--mode=}
                MODE_SET=1
                ;;
            --trusted-proxies)
                [ $# -ge 2 ] || err "--trusted-proxies needs a list of CIDRs, e.g. --trusted-proxies 10.0.0.0/8,2001:db8::/32"
                TRUSTED_PROXIES=$2
                TRUSTED_PROXIES_SET=1
                shift
                ;;
            --trusted-proxies=*)
                TRUSTED_PROXIES=${1#--trusted-proxies=}
                TRUSTED_PROXIES_SET=1
                ;;
            --ports)
                [ $# -ge 2 ] || err "--ports needs a list of listener ports, e.g. --ports 80,443,8000-8099 ('' for every port)"
                PORTS=$2
                PORTS_SET=1
                shift
                ;;
            --ports=*)
                PORTS=${1#--ports=}
                PORTS_SET=1
                ;;
            --formats)
                [ $# -ge 2 ] || err "--formats needs a bitmask of TOA layouts, e.g. --formats 0xf"
                FORMATS=$2
                FORMATS_SET=1
                shift
                ;;
            --formats=*)
                FORMATS=${1#--formats=}
                FORMATS_SET=1
                ;;
            --capture)
                [ $# -ge 2 ] || err "--capture needs one of auto, fexit, sock-ops"
                CAPTURE=$2
                CAPTURE_SET=1
                shift
                ;;
            --capture=*)
                CAPTURE=${1#--capture=}
                CAPTURE_SET=1
                ;;
            --cgroup)
                [ $# -ge 2 ] || err "--cgroup needs a cgroup v2 path, e.g. --cgroup /system.slice/nginx.service ('/' for every process)"
                CGROUP=$2
                CGROUP_SET=1
                shift
                ;;
            --cgroup=*)
                CGROUP=${1#--cgroup=}
                CGROUP_SET=1
                ;;
            *) err "unknown option '$1'" "see $PROG --help for the options" ;;
        esac
        shift
    done
    if [ "$COMPILE" = 1 ] && [ "$UNINSTALL" = 1 ]; then
        err "--compile and --uninstall do not go together" "see $PROG --help"
    fi
    case $MODE in
        auto | kmod | bpf) ;;
        *) err "--mode takes auto, kmod or bpf, not '$MODE'" "see $PROG --help" ;;
    esac
    if [ "$MODE_SET" = 1 ] && [ "$UNINSTALL" = 1 ]; then
        err "--uninstall removes whichever mode is installed; it takes no --mode" "nothing was changed"
    fi
    if [ "$COMPILE" = 1 ] && [ "$MODE" = bpf ]; then
        err "--compile builds toa.ko; the eBPF mode (--mode bpf) needs no build" "choose one of them"
    fi
    if [ "$PROG" = compile_install_toa.sh ] && [ "$MODE" = bpf ]; then
        err "compile_install_toa.sh builds toa.ko; the eBPF mode needs no build: nothing was changed" \
            "install the eBPF mode with: curl -fsSL $TOA_DEFAULT_BASE_URL/install_toa.sh | sudo bash -s -- --mode bpf"
    fi
    if [ -z "$BASE_URL" ]; then
        BASE_URL=$TOA_DEFAULT_BASE_URL
    fi
    BASE_URL=${BASE_URL%/}
    case $BASE_URL in
        https://* | http://*) ;;
        *) err "--base-url must be an http:// or https:// URL, not '$BASE_URL'" ;;
    esac
    case $BASE_URL in
        *[[:space:]\'\"\`\$\\]*) err "--base-url contains characters a URL cannot have: '$BASE_URL'" ;;
    esac
    if [ "$TRUSTED_PROXIES_SET" = 1 ]; then
        case $TRUSTED_PROXIES in
            "" | *[!0-9A-Fa-f.:/,]*)
                err "--trusted-proxies takes a comma-separated list of CIDRs such as 10.0.0.0/8,2001:db8::/32, not '$TRUSTED_PROXIES'" \
                    "nothing was changed"
                ;;
        esac
    fi
    check_bpf_settings
}

# check_bpf_settings: --ports, --formats, --capture and --cgroup are the eBPF mode's
# settings (toa bpf load checks them in full; here only their shape, so that
# nothing a shell or the unit's environment file would read differently gets
# through). toa.ko takes none of them from the installers.
function check_bpf_settings {
    case $PORTS in
        *[!0-9,-]*) err "--ports takes a comma-separated list of ports and ranges such as 80,443,8000-8099, not '$PORTS'" "nothing was changed" ;;
    esac
    if [ "$FORMATS_SET" = 1 ]; then
        case $FORMATS in
            0[xX]*[!0-9A-Fa-f]* | 0[xX]) err "--formats takes a bitmask such as 0xf (decimal or 0x-hex), not '$FORMATS'" "nothing was changed" ;;
            0[xX]*) ;;
            "" | *[!0-9]*) err "--formats takes a bitmask such as 0xf (decimal or 0x-hex), not '$FORMATS'" "nothing was changed" ;;
        esac
    fi
    if [ "$CAPTURE_SET" = 1 ]; then
        case $CAPTURE in
            auto | fexit | sock-ops) ;;
            *) err "--capture takes auto, fexit or sock-ops, not '$CAPTURE'" "nothing was changed" ;;
        esac
    fi
    if [ "$CGROUP_SET" = 1 ]; then
        case $CGROUP in
            *[!A-Za-z0-9._@:/+-]* | *..*) err "--cgroup takes a cgroup v2 path such as /system.slice/nginx.service (letters, digits and ._@:/+-, no '..'), not '$CGROUP'" "nothing was changed" ;;
            "") CGROUP=/ ;;
        esac
    fi
    if [ "$MODE" = kmod ] || [ "$PROG" = compile_install_toa.sh ]; then
        refuse_bpf_settings
    fi
}

# refuse_bpf_settings: before toa.ko is installed, nothing changed yet.
function refuse_bpf_settings {
    local given=""
    [ "$PORTS_SET" = 0 ] || given="$given --ports"
    [ "$FORMATS_SET" = 0 ] || given="$given --formats"
    [ "$CAPTURE_SET" = 0 ] || given="$given --capture"
    [ "$CGROUP_SET" = 0 ] || given="$given --cgroup"
    [ -n "$given" ] || return 0
    err "${given# }: settings of the eBPF mode, and this installs toa.ko; nothing was changed" \
        "for the eBPF mode: install_toa.sh --mode bpf${given}; toa.ko takes ports and formats as module parameters ($MODPROBE_CONF: options toa ports=... formats=...)"
}

function make_tmp {
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/toa.XXXXXX") ||
        err "could not create a temporary directory in ${TMPDIR:-/tmp}" "free some space there (or set TMPDIR), then run this again"
    trap cleanup EXIT
    trap 'exit 1' HUP INT TERM
}

function cleanup {
    if [ -n "$TMP_DIR" ]; then
        rm -rf "$TMP_DIR"
    fi
}

# ---------------------------------------------------------------- what runs here

# os_field KEY FILE: sets FIELD to KEY's value in an os-release style file.
function os_field {
    FIELD=$(sed -n "/^$1=/{s/^$1=//;s/^[\"']//;s/[\"']\$//;p;q;}" "$2" 2>/dev/null)
}

function detect_system {
    KREL=$(uname -r) || err "uname -r failed"
    KARCH=$(uname -m) || err "uname -m failed"
    case $KREL in
        "" | *[!A-Za-z0-9._+~-]*) err "unexpected kernel release '$KREL' from uname -r" ;;
    esac
    local file line
    for file in "$ROOT/etc/os-release" "$ROOT/usr/lib/os-release"; do
        if [ -r "$file" ]; then
            os_field ID "$file"
            OS_ID=$FIELD
            os_field VERSION_ID "$file"
            OS_VERSION=$FIELD
            os_field PRETTY_NAME "$file"
            OS_NAME=$FIELD
            break
        fi
    done
    if [ -z "$OS_ID" ]; then
        if [ -r "$ROOT/etc/redhat-release" ]; then
            line=$(sed -n 1p "$ROOT/etc/redhat-release")
            OS_NAME=$line
            case $line in
                CentOS*) OS_ID=centos ;;
                Red\ Hat*) OS_ID=rhel ;;
                *) OS_ID=redhat ;;
            esac
        elif [ -r "$ROOT/etc/SuSE-release" ]; then
            OS_NAME=$(sed -n 1p "$ROOT/etc/SuSE-release")
            case $OS_NAME in
                *openSUSE*) OS_ID=opensuse ;;
                *) OS_ID=sles ;;
            esac
            OS_VERSION=$(sed -n 's/^VERSION *= *//p' "$ROOT/etc/SuSE-release")
            line=$(sed -n 's/^PATCHLEVEL *= *//p' "$ROOT/etc/SuSE-release")
            if [ -n "$line" ] && [ "$line" != 0 ]; then
                OS_VERSION=$OS_VERSION.$line
            fi
        elif [ -r "$ROOT/etc/debian_version" ]; then
            OS_ID=debian
            OS_VERSION=$(sed -n 1p "$ROOT/etc/debian_version")
            OS_NAME="Debian $OS_VERSION"
        fi
    fi
    # os-release of CentOS/RHEL 7 says VERSION_ID="7"; the minor release is only here.
    case $OS_ID in
        centos | rhel | redhat)
            if [ -r "$ROOT/etc/redhat-release" ]; then
                line=$(sed -n 's/.* release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' "$ROOT/etc/redhat-release")
                if [ -n "$line" ]; then
                    OS_VERSION=$line
                fi
            fi
            ;;
        debian) OS_VERSION=${OS_VERSION%%.*} ;;
    esac
    if [ -z "$OS_ID" ]; then
        OS_ID=unknown
        OS_NAME="an unrecognised distribution"
    fi
    DISTRO_KEY=$OS_ID${OS_VERSION:+-$OS_VERSION}
    if [ -z "$OS_NAME" ]; then
        OS_NAME=$DISTRO_KEY
    fi
}

# ---------------------------------------------------------------- downloads

# download URL FILE
function download {
    if check_cmd curl; then
        curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
    else
        wget -q -O "$2" "$1"
    fi
}

# fetch URL FILE WHAT
function fetch {
    if ! download "$1" "$2"; then
        rm -f "$2"
        err "could not download $3 from $1; nothing was changed" \
            "check that this machine reaches $BASE_URL (and its proxy settings, e.g. https_proxy)," \
            "and that the URL is right (--base-url); then run this again"
    fi
}

function warn_plain_http {
    case $BASE_URL in
        http://*) warn "$BASE_URL is plain http: the checksums catch damaged downloads, not a network that alters them; prefer an https URL" ;;
    esac
}

# sha256_of FILE: sets SHA.
function sha256_of {
    SHA=$(sha256sum <"$1") || err "sha256sum failed on $1"
    SHA=${SHA%% *}
}

function is_sha256 {
    case $1 in
        *[!0-9a-f]*) return 1 ;;
    esac
    [ ${#1} -eq 64 ]
}

# verify_sha256 FILE EXPECTED WHAT: fails closed.
function verify_sha256 {
    if ! is_sha256 "$2"; then
        err "no valid sha256 published for $3 ('$2'); refusing to use it, nothing was changed" \
            "the files on $BASE_URL are incomplete; report it to whoever publishes them"
    fi
    sha256_of "$1"
    if [ "$SHA" != "$2" ]; then
        err "checksum mismatch for $3: expected sha256 $2, got $SHA" \
            "the download is damaged or was altered, so it was not used: nothing was installed or loaded" \
            "run this again; if it happens again, report it to whoever publishes $BASE_URL"
    fi
    say "verified sha256 of $3"
}

# sums_lookup SUMS-FILE NAME: sets SUM (empty when NAME is not listed).
function sums_lookup {
    local hash name
    SUM=""
    while read -r hash name; do
        name=${name#\*}
        if [ "$name" = "$2" ]; then
            SUM=$hash
        fi
    done <"$1"
}

# ---------------------------------------------------------------- files

# same_file A B: both exist with the same content.
function same_file {
    [ -f "$1" ] && [ -f "$2" ] || return 1
    local a
    sha256_of "$1"
    a=$SHA
    sha256_of "$2"
    [ "$a" = "$SHA" ]
}

# put_file PATH CONTENT: writes CONTENT (plus a newline) unless it is already
# there; sets CHANGED=1 when it (would) write.
function put_file {
    CHANGED=0
    printf '%s\n' "$2" >"$TMP_DIR/put"
    if same_file "$TMP_DIR/put" "$1"; then
        return 0
    fi
    CHANGED=1
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would write $1:"
        sed 's/^/    /' "$TMP_DIR/put"
        return 0
    fi
    ensure mkdir -p "${1%/*}"
    ensure cp "$TMP_DIR/put" "$1.toa-new"
    ensure chmod 644 "$1.toa-new"
    ensure mv -f "$1.toa-new" "$1"
}

# remove_file PATH WHAT: sets CHANGED=1 when it (would) remove something.
function remove_file {
    CHANGED=0
    if [ -e "$1" ] || [ -L "$1" ]; then
        CHANGED=1
        act rm -f "$1" || err "could not remove $1" "remove it by hand, then run this again"
        if [ "$DRY_RUN" = 0 ]; then
            say "removed $2 ($1)"
        fi
    fi
}

# rewrite_in_place FILE NEWFILE: keeps FILE's inode, mode and symlinks.
function rewrite_in_place {
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would rewrite $1 as:"
        sed 's/^/    /' "$2"
        return 0
    fi
    cat "$2" >"$1" || err "could not write $1" "check that the filesystem is writable, then run this again"
}

# ---------------------------------------------------------------- the module

function loaded_toa {
    [ -d "$ROOT/sys/module/toa" ]
}

# loaded_is KO: the loaded toa was built from the same sources as KO.
function loaded_is {
    local want have
    want=$(modinfo -F srcversion "$1" 2>/dev/null) || return 1
    have=$(cat "$ROOT/sys/module/toa/srcversion" 2>/dev/null) || return 1
    [ -n "$want" ] && [ "$want" = "$have" ]
}

# same_build A B: both built from the same sources for the same kernel.
function same_build {
    [ -f "$1" ] && [ -f "$2" ] || return 1
    local a b
    a=$(modinfo -F srcversion "$1" 2>/dev/null)"/"$(modinfo -F vermagic "$1" 2>/dev/null) || return 1
    b=$(modinfo -F srcversion "$2" 2>/dev/null)"/"$(modinfo -F vermagic "$2" 2>/dev/null) || return 1
    case $a in
        /* | */) return 1 ;;
    esac
    [ "$a" = "$b" ]
}

# check_vermagic KO: the module must be built for the running kernel.
function check_vermagic {
    local vermagic
    vermagic=$(modinfo -F vermagic "$1" 2>/dev/null) || vermagic=""
    vermagic=${vermagic%% *}
    if [ -z "$vermagic" ]; then
        err "could not read the vermagic of toa.ko (modinfo -F vermagic); it is not a kernel module this machine can use" \
            "nothing was loaded or changed; report it with the output of 'uname -r'"
    fi
    if [ "$vermagic" != "$KREL" ]; then
        err "this toa.ko was built for kernel $vermagic, but this machine runs $KREL: refusing to load it" \
            "nothing was loaded or changed" \
            "use a module built for $KREL, or build one here with compile_install_toa.sh ($BASE_URL/compile_install_toa.sh)"
    fi
    say "toa.ko matches the running kernel (vermagic $vermagic)"
}

function module_is_signed {
    local signer
    signer=$(modinfo -F signer "$1" 2>/dev/null) || signer=""
    if [ -n "$signer" ]; then
        return 0
    fi
    tail -c 28 "$1" 2>/dev/null | grep -q 'Module signature appended'
}

# check_module_signing KO: stops before loading when the kernel only accepts
# signed modules and KO is not signed.
# module_signing_reasons: sets REASONS to why this kernel loads only signed
# modules (lockdown, module.sig_enforce, Secure Boot); empty when it loads any.
REASONS=""
function module_signing_reasons {
    local reasons="" lockdown enforce state
    if [ -r "$ROOT/sys/kernel/security/lockdown" ]; then
        lockdown=$(cat "$ROOT/sys/kernel/security/lockdown" 2>/dev/null) || lockdown=""
        case $lockdown in
            *"[integrity]"* | *"[confidentiality]"*) reasons="kernel lockdown is on ($lockdown)" ;;
        esac
    fi
    enforce=$(cat "$ROOT/sys/module/module/parameters/sig_enforce" 2>/dev/null) || enforce=""
    if [ "$enforce" = Y ]; then
        reasons="${reasons:+$reasons; }module.sig_enforce is set"
    fi
    if check_cmd mokutil; then
        state=$(mokutil --sb-state 2>/dev/null) || state=""
        case $state in
            *"SecureBoot enabled"*) reasons="${reasons:+$reasons; }Secure Boot is enabled" ;;
        esac
    elif [ -r "$ROOT$EFI_SECURE_BOOT_VAR" ] && check_cmd od; then
        state=$(od -An -tu1 -j4 -N1 "$ROOT$EFI_SECURE_BOOT_VAR" 2>/dev/null) || state=""
        if [ "${state// /}" = 1 ]; then
            reasons="${reasons:+$reasons; }Secure Boot is enabled"
        fi
    fi
    REASONS=$reasons
}

# modules_disabled: kernel.modules_disabled=1, no module loads until reboot.
function modules_disabled {
    [ "$(cat "$ROOT/proc/sys/kernel/modules_disabled" 2>/dev/null)" = 1 ]
}

function check_module_signing {
    local reasons
    module_signing_reasons
    reasons=$REASONS
    if [ -z "$reasons" ]; then
        return 0
    fi
    if module_is_signed "$1"; then
        say "this kernel loads only signed modules ($reasons); toa.ko is signed, so it loads if its key is enrolled (mokutil --list-enrolled)"
        return 0
    fi
    err "this kernel loads only signed modules ($reasons), and this toa.ko is not signed: nothing was loaded or changed" \
        "fix it one of these ways:" \
        "1. turn Secure Boot off in the firmware (UEFI) setup, boot, and run this again;" \
        "2. or let DKMS sign what it builds: install dkms, enroll its key with" \
        "   'mokutil --import /var/lib/dkms/mok.pub' (set a one-time password), reboot and" \
        "   confirm 'Enroll MOK', then run compile_install_toa.sh ($BASE_URL/compile_install_toa.sh);" \
        "3. or sign toa.ko with your own enrolled key (Machine Owner Key):" \
        "   /lib/modules/$KREL/build/scripts/sign-file sha256 MOK.priv MOK.der toa.ko"
}

# say_coverage: what the toa.ko just loaded covers. It arms the listeners
# that were open at load (/proc/net/toa_listeners), so running services need
# no restart; only their connections from before the load keep the proxy's
# address.
function say_coverage {
    local armed
    armed=$(sed -n 's/^armed_at_load:[[:space:]]*\([0-9]*\)$/\1/p' "$ROOT/proc/net/toa_listeners" 2>/dev/null)
    if [ -n "$armed" ]; then
        say "toa.ko took over $armed listening sockets that were already open: services already running show the client on their new connections, without a restart; connections they accepted (or an accept() already waiting returns) before the load keep the proxy's address"
    fi
}

# toa_pinned: the loaded toa.ko pinned itself (/proc/net/toa_stats says
# `pinned : 1`): a socket took kTLS or another TCP ULP, which copied toa's
# function table, so the kernel refuses rmmod until the next reboot.
function toa_pinned {
    [ -r "$ROOT/proc/net/toa_stats" ] &&
        grep -Eq '^pinned[[:space:]]*:[[:space:]]*1[[:space:]]*$' "$ROOT/proc/net/toa_stats"
}

PINNED_WHY="it is pinned (a socket took kTLS or another TCP ULP)"

# unload_toa: rmmod toa. Returns 1, with KMOD_PINNED=1, when toa.ko is pinned
# (it stays loaded until the next reboot; the caller decides what that
# means); any other failure stops with an error.
KMOD_PINNED=0
function unload_toa {
    if [ "$KMOD_PINNED" = 1 ]; then
        return 1
    fi
    if [ "$DRY_RUN" = 1 ]; then
        if toa_pinned; then
            KMOD_PINNED=1
            say "dry run: rmmod toa would be refused: toa.ko stays loaded until the next reboot, $PINNED_WHY"
            return 1
        fi
        act rmmod toa
        return 0
    fi
    if rmmod toa 2>"$TMP_DIR/rmmod.err"; then
        say "unloaded toa (rmmod toa)"
        return 0
    fi
    if toa_pinned; then
        KMOD_PINNED=1
        say "toa.ko cannot be unloaded before the next reboot: $PINNED_WHY, so the kernel refuses rmmod toa"
        return 1
    fi
    cat "$TMP_DIR/rmmod.err" >&2
    err "could not unload the toa module that is loaded now (rmmod toa failed)" \
        "something still uses it: check 'lsmod | grep toa', stop that user, then run this again"
}

# set_live_trusted_proxies: a pinned toa.ko cannot be reloaded with the new
# modprobe.d options, so --trusted-proxies is written to its parameter now.
function set_live_trusted_proxies {
    local param="$ROOT/sys/module/toa/parameters/trusted_proxies"
    if [ "$TRUSTED_PROXIES_SET" = 0 ]; then
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would write trusted_proxies=$TRUSTED_PROXIES to /sys/module/toa/parameters/trusted_proxies"
        return 0
    fi
    if [ -f "$param" ] && printf '%s' "$TRUSTED_PROXIES" >"$param" 2>/dev/null; then
        say "the running toa.ko takes trusted_proxies=$TRUSTED_PROXIES now (written to /sys/module/toa/parameters/trusted_proxies)"
    else
        warn "the running toa.ko did not take trusted_proxies=$TRUSTED_PROXIES (it has no such writable parameter): until the next reboot it keeps its own list ('cat /sys/module/toa/parameters/trusted_proxies')"
    fi
}

# The module as the earlier manual steps left it: shadows ours, so it goes.
function remove_legacy_module {
    remove_file "$ROOT/lib/modules/$KREL/$LEGACY_KO_REL" "the toa.ko of an earlier manual install"
    if [ "$CHANGED" = 1 ]; then
        act depmod -a "$KREL" || err "depmod -a $KREL failed" "run 'depmod -a $KREL' by hand and check its output"
    fi
}

# place_copy KO DEST: installs KO as DEST, keeping the old file to restore.
function place_copy {
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would install toa.ko as $2"
        act depmod -a "$KREL"
        return 0
    fi
    ensure mkdir -p "${2%/*}"
    if [ -f "$2" ]; then
        ensure cp "$2" "$TMP_DIR/previous-toa.ko"
    fi
    ensure cp "$1" "$2.toa-new"
    ensure chmod 644 "$2.toa-new"
    ensure mv -f "$2.toa-new" "$2"
    say "installed $2"
    if ! depmod -a "$KREL"; then
        restore_previous "$2"
        err "depmod -a $KREL failed after installing $2, so the module was taken out again; nothing is loaded" \
            "run 'depmod -a $KREL' by hand and check its output, then run this again"
    fi
}

# restore_previous DEST: undoes place_copy (the earlier file back, or none).
function restore_previous {
    if [ "$PLACE" != copy ] || [ "$DRY_RUN" = 1 ]; then
        return 0
    fi
    if [ -f "$TMP_DIR/previous-toa.ko" ]; then
        cp "$TMP_DIR/previous-toa.ko" "$1" && warn "put the previously installed $1 back"
    else
        rm -f "$1"
    fi
    depmod -a "$KREL" || warn "depmod -a $KREL failed; run it by hand"
}

# load_failed DEST: modprobe refused the module: undo the file change.
function load_failed {
    restore_previous "$1"
    err "modprobe toa failed: the kernel refused the module, so toa is not loaded" \
        "the reason is in the kernel log: run 'dmesg | tail' (Secure Boot, a missing symbol or a wrong option in $MODPROBE_CONF are the usual causes)" \
        "boot persistence was not written; fix the cause and run this again"
}

# load_module KO: unload an older toa, put KO in place (PLACE=copy: under
# updates/, PLACE=dkms: dkms install), depmod, modprobe. Does nothing when the
# same module is already installed and loaded with the same options.
function load_module {
    local ko=$1 dest="$ROOT/lib/modules/$KREL/updates/toa.ko" need_place=1 need_load=1
    if [ "$PLACE" = copy ]; then
        if same_file "$ko" "$dest" || { [ "$SAME_BY" = build ] && same_build "$ko" "$dest"; }; then
            need_place=0
        fi
    fi
    if [ "$PLACE" = dkms ] && [ "$DKMS_UNCHANGED" = 1 ]; then
        need_place=0
    fi
    if loaded_toa; then
        if [ "$need_place" = 0 ] && [ "$PARAMS_CHANGED" = 0 ] && loaded_is "$ko"; then
            need_load=0
        elif ! unload_toa; then
            # Pinned: the files go in place for the next boot; loading now
            # would fail, the old toa.ko being loaded.
            need_load=0
        fi
    fi
    remove_legacy_module
    if [ "$need_place" = 1 ]; then
        case $PLACE in
            copy) place_copy "$ko" "$dest" ;;
            dkms)
                # One toa.ko per kernel: DKMS's copy replaces a prebuilt one.
                remove_file "$dest" "the prebuilt toa.ko (DKMS installs its own)"
                dkms_install
                ;;
        esac
    else
        say "toa.ko $TOA_VERSION for $KREL is already installed"
    fi
    if [ "$need_load" = 1 ]; then
        if ! act modprobe toa; then
            load_failed "$dest"
        fi
        if [ "$DRY_RUN" = 0 ]; then
            if ! loaded_toa; then
                load_failed "$dest"
            fi
            say "loaded toa $TOA_VERSION"
            say_coverage
        fi
    elif [ "$KMOD_PINNED" = 1 ]; then
        if loaded_is "$ko"; then
            say "the running toa.ko is this build; it cannot be loaded again with the settings in $MODPROBE_CONF before the next reboot: $PINNED_WHY"
        else
            say "the new toa.ko takes over at the next reboot: the running one stays loaded until then, $PINNED_WHY"
        fi
        set_live_trusted_proxies
    else
        say "toa $TOA_VERSION is already loaded; nothing to reload"
    fi
}

# write_trusted_proxies: --trusted-proxies goes to modprobe.d (read at load).
function write_trusted_proxies {
    if [ "$TRUSTED_PROXIES_SET" = 0 ]; then
        return 0
    fi
    put_file "$ROOT$MODPROBE_CONF" "# toa module options (written by $PROG --trusted-proxies; undo: install_toa.sh --uninstall)
options toa trusted_proxies=$TRUSTED_PROXIES"
    if [ "$CHANGED" = 1 ]; then
        PARAMS_CHANGED=1
        if [ "$DRY_RUN" = 0 ]; then
            say "wrote $ROOT$MODPROBE_CONF: trusted_proxies=$TRUSTED_PROXIES"
        fi
    else
        say "$ROOT$MODPROBE_CONF already has trusted_proxies=$TRUSTED_PROXIES"
    fi
    if ! modinfo -F parm "$1" 2>/dev/null | grep -q '^trusted_proxies:'; then
        warn "this toa.ko has no trusted_proxies parameter yet: it loads without it and accepts TOA from any source; the setting applies once a toa.ko that has it is installed"
    fi
}

# ---------------------------------------------------------------- boot persistence

function rc_local_path {
    if [ -e "$ROOT/etc/rc.local" ] || [ -L "$ROOT/etc/rc.local" ] || [ ! -e "$ROOT/etc/rc.d/rc.local" ]; then
        printf '%s\n' "$ROOT/etc/rc.local"
    else
        printf '%s\n' "$ROOT/etc/rc.d/rc.local"
    fi
}

# rc_local_drop FILE: removes our line and the earlier manual install's lines.
function rc_local_drop {
    local file=$1
    [ -f "$file" ] || return 0
    if ! grep -qxF "$RC_LINE" "$file" && ! grep -Eq "$LEGACY_RC_RE" "$file"; then
        return 0
    fi
    grep -vxF "$RC_LINE" "$file" | grep -Ev "$LEGACY_RC_RE" >"$TMP_DIR/rc.local"
    # The rc.local this script created holds nothing else: it goes as a whole.
    printf '#!/bin/sh\nexit 0\n' >"$TMP_DIR/rc.local.created"
    if same_file "$TMP_DIR/rc.local" "$TMP_DIR/rc.local.created" && [ ! -L "$file" ]; then
        remove_file "$file" "the rc.local this installer created"
        return 0
    fi
    rewrite_in_place "$file" "$TMP_DIR/rc.local"
    if [ "$DRY_RUN" = 0 ]; then
        say "removed the toa lines from $file"
    fi
}

# rc_local_add FILE: our line once, before a final `exit 0`.
function rc_local_add {
    local file=$1
    if [ -f "$file" ] && grep -qxF "$RC_LINE" "$file"; then
        say "$file already loads toa at boot"
        return 0
    fi
    need_cmd awk gawk
    if [ -f "$file" ]; then
        awk -v line="$RC_LINE" '
            { text[NR] = $0 }
            NF { last = NR }
            END {
                at = (last && text[last] ~ /^[ \t]*exit[ \t]+0[ \t]*$/) ? last : 0
                for (i = 1; i <= NR; i++) { if (i == at) print line; print text[i] }
                if (!at) print line
            }' "$file" >"$TMP_DIR/rc.local"
        rewrite_in_place "$file" "$TMP_DIR/rc.local"
    else
        printf '#!/bin/sh\n%s\nexit 0\n' "$RC_LINE" >"$TMP_DIR/rc.local"
        if [ "$DRY_RUN" = 1 ]; then
            say "dry run: would create $file:"
            sed 's/^/    /' "$TMP_DIR/rc.local"
        else
            ensure mkdir -p "${file%/*}"
            ensure cp "$TMP_DIR/rc.local" "$file"
        fi
    fi
    # rc.local runs at boot only when it is executable (e.g. RHEL's rc.d/rc.local).
    act chmod +x "$file" || err "could not make $file executable"
    if [ "$DRY_RUN" = 0 ]; then
        say "added 'modprobe toa' to $file so toa is loaded at boot"
    fi
}

function persist {
    local rc
    rc=$(rc_local_path)
    if [ -d "$ROOT/run/systemd/system" ]; then
        put_file "$ROOT$MODULES_LOAD_CONF" "# Load toa at boot (written by $PROG; undo: install_toa.sh --uninstall)
toa"
        if [ "$CHANGED" = 1 ]; then
            if [ "$DRY_RUN" = 0 ]; then
                say "wrote $ROOT$MODULES_LOAD_CONF so systemd loads toa at boot"
            fi
        else
            say "$ROOT$MODULES_LOAD_CONF already loads toa at boot"
        fi
        rc_local_drop "$rc"
    else
        rc_local_drop_legacy_only "$rc"
        rc_local_add "$rc"
    fi
}

# Without systemd our own line stays; only the earlier manual install's lines go.
function rc_local_drop_legacy_only {
    local file=$1
    [ -f "$file" ] || return 0
    grep -Eq "$LEGACY_RC_RE" "$file" || return 0
    grep -Ev "$LEGACY_RC_RE" "$file" >"$TMP_DIR/rc.local"
    rewrite_in_place "$file" "$TMP_DIR/rc.local"
    if [ "$DRY_RUN" = 0 ]; then
        say "removed the 'insmod .../toa.ko' lines an earlier manual install left in $file"
    fi
}

# ---------------------------------------------------------------- DKMS

# dkms_versions: registered toa versions, one per line.
function dkms_versions {
    dkms status -m toa 2>/dev/null | sed -n 's/^toa[,/] *\([^,:]*\).*/\1/p' | sort -u
}

function dkms_remove_all {
    local v
    for v in $(dkms_versions); do
        act dkms remove -m toa -v "$v" --all || err "dkms remove -m toa -v $v --all failed" "run it by hand and check its output"
        if [ -f "$ROOT/usr/src/toa-$v/dkms.conf" ]; then
            act rm -rf "$ROOT/usr/src/toa-$v"
        fi
        if [ "$DRY_RUN" = 0 ]; then
            say "removed toa $v from DKMS"
        fi
    done
}

# dkms_install: called by load_module (PLACE=dkms) after dkms_register.
function dkms_install {
    act dkms install -m toa -v "$TOA_VERSION" -k "$KREL" ||
        err "dkms install -m toa -v $TOA_VERSION -k $KREL failed" "its output is above; fix the cause and run this again"
    if [ "$DRY_RUN" = 0 ]; then
        say "DKMS installed toa $TOA_VERSION for $KREL"
    fi
    act depmod -a "$KREL" || err "depmod -a $KREL failed" "run 'depmod -a $KREL' by hand and check its output"
}

# ---------------------------------------------------------------- status and removal

function show_status {
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: nothing was changed"
        return 0
    fi
    say "lsmod | grep toa:"
    if check_cmd lsmod; then
        lsmod | grep '^toa ' || warn "lsmod does not list toa"
    fi
    if [ -r "$ROOT/proc/net/toa_stats" ]; then
        say "/proc/net/toa_stats:"
        cat "$ROOT/proc/net/toa_stats"
    else
        warn "toa is loaded but /proc/net/toa_stats is missing; check 'dmesg | grep toa'"
    fi
}

# remove_kmod_mode: toa.ko unloaded, its files, DKMS registration and boot
# configuration removed. Sets DID=1 when there was something to remove.
DID=0
function remove_kmod_mode {
    local did=0 f rel rc
    if loaded_toa; then
        # Pinned (KMOD_PINNED=1): it stays loaded; everything else goes.
        unload_toa || true
        did=1
    fi
    if check_cmd dkms && [ -n "$(dkms_versions)" ]; then
        dkms_remove_all
        did=1
    fi
    for f in "$ROOT"/lib/modules/*/updates/toa.ko "$ROOT"/lib/modules/*/"$LEGACY_KO_REL"; do
        [ -f "$f" ] || continue
        rel=${f#"$ROOT"/lib/modules/}
        rel=${rel%%/*}
        remove_file "$f" "toa.ko for $rel"
        act depmod -a "$rel" || warn "depmod -a $rel failed; run it by hand"
        did=1
    done
    for f in "$ROOT$MODULES_LOAD_CONF" "$ROOT$MODPROBE_CONF"; do
        remove_file "$f" "toa's boot configuration"
        if [ "$CHANGED" = 1 ]; then
            did=1
        fi
    done
    rc=$(rc_local_path)
    if [ -f "$rc" ] && { grep -qxF "$RC_LINE" "$rc" || grep -Eq "$LEGACY_RC_RE" "$rc"; }; then
        rc_local_drop "$rc"
        did=1
    fi
    [ "$did" = 0 ] || DID=1
}

# kmod_mode_installed: toa.ko is loaded, or installed for this kernel, or
# loaded at boot.
function kmod_mode_installed {
    loaded_toa || [ -f "$ROOT/lib/modules/$KREL/updates/toa.ko" ] || [ -f "$ROOT$MODULES_LOAD_CONF" ] ||
        { check_cmd dkms && [ -n "$(dkms_versions)" ]; }
}

# bpf_mode_installed: the eBPF mode is attached, or set up to be at boot.
function bpf_mode_installed {
    [ -d "$ROOT$BPF_PINS" ] || [ -f "$ROOT$BPF_UNIT_PATH" ] || [ -f "$ROOT$BPF_ENV" ]
}

# remove_bpf_mode: the eBPF mode detached (its pins removed), its unit
# disabled and removed, its settings removed. Sets DID=1 when there was
# something to remove.
function remove_bpf_mode {
    local f
    if [ -f "$ROOT$BPF_UNIT_PATH" ]; then
        if check_cmd systemctl; then
            # Stopping runs the unit's ExecStop (toa bpf unload).
            act systemctl disable --now "$BPF_UNIT" >/dev/null 2>&1 ||
                warn "systemctl disable --now $BPF_UNIT failed; removing the unit all the same"
        fi
        for f in "$ROOT"/etc/systemd/system/*.wants/"$BPF_UNIT"; do
            if [ -L "$f" ] || [ -e "$f" ]; then
                act rm -f "$f" || err "could not remove $f" "remove it by hand, then run this again"
            fi
        done
        remove_file "$ROOT$BPF_UNIT_PATH" "the unit that loads the eBPF mode at boot"
        if check_cmd systemctl && [ -d "$ROOT/run/systemd/system" ]; then
            act systemctl daemon-reload || warn "systemctl daemon-reload failed; run it by hand"
        fi
        DID=1
    fi
    if [ -d "$ROOT$BPF_PINS" ]; then
        if [ -x "$ROOT$TOA_BIN" ]; then
            act "$ROOT$TOA_BIN" bpf unload ||
                err "'$TOA_BIN bpf unload' failed, so the eBPF mode is still attached" \
                    "its message is above; fix the cause and run this again"
        else
            # The pinned links hold the programs attached: unpinned, they detach.
            act rm -rf "$ROOT$BPF_PINS" || err "could not remove $ROOT$BPF_PINS" "remove it by hand, then run this again"
        fi
        if [ "$DRY_RUN" = 0 ]; then
            say "detached the eBPF mode (toa bpf unload)"
        fi
        DID=1
    fi
    remove_file "$ROOT$BPF_ENV" "the eBPF mode's settings"
    [ "$CHANGED" = 0 ] || DID=1
    if [ -d "$ROOT${BPF_ENV%/*}" ] && [ -z "$(ls -A "$ROOT${BPF_ENV%/*}")" ]; then
        act rmdir "$ROOT${BPF_ENV%/*}" || warn "could not remove the empty $ROOT${BPF_ENV%/*}"
    fi
}

# leave_bpf_mode: before toa.ko goes in, the eBPF mode goes (never both).
function leave_bpf_mode {
    if bpf_mode_installed; then
        say "the eBPF mode is installed here; removing it first, so that only toa.ko is active"
        remove_bpf_mode
    fi
}

# uninstall: either mode, and the toa command.
function uninstall {
    DID=0
    remove_bpf_mode
    remove_kmod_mode
    remove_file "$ROOT$TOA_BIN" "the toa command"
    [ "$CHANGED" = 0 ] || DID=1
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: nothing was changed"
    elif [ "$KMOD_PINNED" = 1 ]; then
        say "toa is uninstalled: files and boot configuration removed"
        say "toa.ko stays loaded until the next reboot: $PINNED_WHY; nothing loads it at boot any more"
    elif [ "$DID" = 1 ]; then
        say "toa is uninstalled: module unloaded or eBPF mode detached, files and boot configuration removed"
    else
        say "toa is not installed on this machine; nothing to remove"
    fi
}

# ---------------------------------------------------------------- the toa command

# The operator's command (toa status, toa stats, toa selftest).
TOA_BIN=/usr/local/sbin/toa

# install_toa_command: toa-<arch> from the base URL, checked against
# SHA256SUMS, installed as $TOA_BIN. Returns 3 when the release has none
# for this architecture; exits (err) on anything else that goes wrong.
function install_toa_command {
    local name="toa-$KARCH"
    fetch "$BASE_URL/SHA256SUMS" "$TMP_DIR/SHA256SUMS" "the checksum list"
    sums_lookup "$TMP_DIR/SHA256SUMS" "$name"
    if [ -z "$SUM" ]; then
        warn "$BASE_URL publishes no toa command for $KARCH ($name): it is not installed and the self-test is skipped"
        return 3
    fi
    fetch "$BASE_URL/$name" "$TMP_DIR/$name" "the toa command ($name)"
    verify_sha256 "$TMP_DIR/$name" "$SUM" "$name"
    if same_file "$TMP_DIR/$name" "$ROOT$TOA_BIN"; then
        say "the toa command $TOA_BIN is up to date"
        return 0
    fi
    act mkdir -p "$ROOT${TOA_BIN%/*}" || err "could not create $ROOT${TOA_BIN%/*}"
    act cp "$TMP_DIR/$name" "$ROOT$TOA_BIN" || err "could not write $ROOT$TOA_BIN"
    act chmod 0755 "$ROOT$TOA_BIN" || err "could not make $ROOT$TOA_BIN executable"
    say "installed the toa command as $TOA_BIN (toa status, toa stats, toa selftest)"
}

# prove_install: after the module is loaded and persisted, installs the toa
# command and runs `toa selftest`, which proves on this kernel that
# applications see the client a proxy names. Any failure undoes the whole
# installation (module unloaded, files and boot configuration removed).
function prove_install {
    local status=0
    # A subshell, so that a failed download comes back here to be undone.
    ( install_toa_command ) || status=$?
    if [ "$status" = 3 ]; then
        return 0
    elif [ "$status" != 0 ]; then
        undo_install "the toa command could not be installed (see above)"
    fi
    run_selftest
}

# run_selftest: `toa selftest` on this kernel; a failure undoes the whole
# installation.
function run_selftest {
    if [ "$NO_SELFTEST" = 1 ]; then
        say "--no-selftest: not running $TOA_BIN selftest"
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would run: $TOA_BIN selftest"
        return 0
    fi
    say "proving toa on kernel $KREL: $TOA_BIN selftest"
    if "$ROOT$TOA_BIN" selftest >"$TMP_DIR/selftest.out" 2>&1; then
        sed 's/^/  /' "$TMP_DIR/selftest.out"
        return 0
    fi
    sed 's/^/  /' "$TMP_DIR/selftest.out" >&2
    undo_install "toa selftest failed: $(grep -m 1 -E '^(FAIL|toa:)' "$TMP_DIR/selftest.out" || tail -n 1 "$TMP_DIR/selftest.out")"
}

# undo_install REASON: uninstalls what this run installed, then fails. A
# pinned toa.ko cannot be unloaded: it stays until the next reboot, which no
# longer loads it.
function undo_install {
    warn "$1; undoing the installation"
    uninstall
    if [ "$KMOD_PINNED" = 1 ]; then
        err "$1" "toa's files and boot configuration were removed, but toa.ko could not be unloaded: $PINNED_WHY;" \
            "it stays loaded until the next reboot, which does not load it again: reboot to be rid of it" \
            "the self-test's lines are above; report them with 'uname -r' and your distribution"
    fi
    err "$1" "toa was unloaded or detached, and removed: this kernel does not show applications the client's address with it" \
        "the self-test's lines are above; report them with 'uname -r' and your distribution" \
        "to install anyway (not recommended), run this again with --no-selftest"
}
