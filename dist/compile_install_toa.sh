#!/bin/bash
# compile_install_toa.sh: builds toa.ko from source for the running kernel,
# loads it, installs it and keeps it loaded at boot; with DKMS installed it
# registers toa there, so every kernel upgrade rebuilds it.
#
#   curl -fsSL @TOA_BASE_URL@/compile_install_toa.sh | sudo bash
#
# Installs gcc, make and the headers of exactly this kernel (yum/dnf, apt-get
# or zypper), downloads toa.tar.gz and checks it against SHA256SUMS.
# Nothing runs until the last line, so a download cut short does nothing.

set -u
PROG=compile_install_toa.sh

# @TOA_LIB@

function usage {
    cat <<EOF
$PROG $TOA_VERSION: build toa.ko from source for the running kernel and install it

Usage: curl -fsSL $TOA_DEFAULT_BASE_URL/$PROG | sudo bash -s -- [OPTIONS]

Installs gcc, make and the headers of the running kernel, downloads
$TOA_DEFAULT_BASE_URL/toa.tar.gz (checked against SHA256SUMS), builds toa.ko with
make, loads it, installs it and loads it at every boot. With dkms installed,
toa is registered with DKMS so kernel upgrades rebuild it.

Options:
  --dry-run                 print every action, change nothing
  --uninstall               unload toa and remove its files, DKMS registration and boot configuration
                            (a pinned toa.ko, see 'toa status', stays loaded until the next reboot)
  --trusted-proxies CIDRS   accept TOA only from these proxies, e.g. 10.0.0.0/8,2001:db8::/32
                            (written to $MODPROBE_CONF)
  --base-url URL            where toa.tar.gz and SHA256SUMS are (default $TOA_DEFAULT_BASE_URL)
  --mode kmod               what this script installs: toa.ko (an installed eBPF mode is
                            removed first); for the eBPF mode use install_toa.sh --mode bpf
  --no-selftest             install the toa command but do not run 'toa selftest' after loading
  --version                 print the version
  --help                    print this help
EOF
}

KDIR=""

# zypper_devel_package: kernel-<flavour>-devel=<version> of the running kernel.
# uname -r drops the package's last release digit (5.14.21-150500.55.39-default
# is kernel-default 5.14.21-150500.55.39.1), so ask rpm which package it is.
DEVEL_PKG=""
function zypper_devel_package {
    local flavour=${KREL##*-} base=${KREL%-*} full=""
    if check_cmd rpm; then
        full=$(rpm -qf --qf '%{VERSION}-%{RELEASE}\n' "$ROOT/lib/modules/$KREL" 2>/dev/null | sed -n 1p) || full=""
    fi
    case $full in
        "$base" | "$base".*) DEVEL_PKG="kernel-$flavour-devel=$full" ;;
        *)
            err "could not tell which kernel-$flavour package provides $KREL (rpm -qf /lib/modules/$KREL); nothing was built" \
                "install the matching headers yourself: 'zypper search -s kernel-$flavour-devel' and install the version starting with $base," \
                "then run this again"
            ;;
    esac
}

# install_build_deps: gcc, make and the headers of exactly this kernel.
function install_build_deps {
    KDIR="$ROOT/lib/modules/$KREL/build"
    if check_cmd gcc && check_cmd make && [ -f "$KDIR/Makefile" ]; then
        say "gcc, make and the headers for $KREL are installed"
        return 0
    fi
    local pm=""
    for pm in dnf yum apt-get zypper ""; do
        if [ -n "$pm" ] && check_cmd "$pm"; then
            break
        fi
    done
    case $pm in
        dnf | yum)
            DEVEL_PKG="kernel-devel-$KREL"
            say "installing gcc, make and $DEVEL_PKG with $pm"
            act "$pm" install -y gcc make "$DEVEL_PKG" ||
                err "$pm could not install gcc, make and $DEVEL_PKG; nothing was built" \
                    "if $DEVEL_PKG is not found, this kernel is older than what your repositories carry:" \
                    "update the kernel ('$pm update kernel') and reboot, or enable the repository that still has $KREL (for old CentOS: vault.centos.org), then run this again"
            ;;
        apt-get)
            DEVEL_PKG="linux-headers-$KREL"
            say "installing gcc, make and $DEVEL_PKG with apt-get"
            act env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
                warn "apt-get update failed; trying with the package lists this machine has"
            act env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc make "$DEVEL_PKG" ||
                err "apt-get could not install gcc, make and $DEVEL_PKG; nothing was built" \
                    "if $DEVEL_PKG is not found, your mirror no longer carries this kernel's headers:" \
                    "upgrade the kernel ('apt-get install linux-image-${KREL##*-}') and reboot, then run this again"
            ;;
        zypper)
            zypper_devel_package
            say "installing gcc, make and $DEVEL_PKG with zypper"
            act zypper --non-interactive install gcc make "$DEVEL_PKG" ||
                err "zypper could not install gcc, make and $DEVEL_PKG; nothing was built" \
                    "if it is not found, this kernel is older than what your repositories carry: 'zypper update kernel-${KREL##*-}' and reboot, then run this again"
            ;;
        *)
            err "no supported package manager (dnf, yum, apt-get, zypper) to install the build tools; nothing was built" \
                "install gcc, make and the headers of exactly this kernel ($KREL) so that $KDIR/Makefile exists, then run this again"
            ;;
    esac
    if [ "$DRY_RUN" = 0 ] && [ ! -f "$KDIR/Makefile" ]; then
        err "the headers for $KREL are installed but $KDIR/Makefile is missing; nothing was built" \
            "check that /lib/modules/$KREL/build points at the headers (ls -l $KDIR), then run this again"
    fi
    if [ "$DRY_RUN" = 0 ]; then
        need_cmd gcc gcc
        need_cmd make make
    fi
}

# fetch_source: toa.tar.gz, checked against SHA256SUMS, unpacked twice: one
# tree to build here, one clean copy for DKMS.
SRC=""
SRC_SHA=""
function fetch_source {
    fetch "$BASE_URL/SHA256SUMS" "$TMP_DIR/SHA256SUMS" "the checksum list"
    sums_lookup "$TMP_DIR/SHA256SUMS" toa.tar.gz
    if [ -z "$SUM" ]; then
        err "$BASE_URL/SHA256SUMS does not list toa.tar.gz, so it cannot be checked; nothing was changed" \
            "report it to whoever publishes $BASE_URL"
    fi
    fetch "$BASE_URL/toa.tar.gz" "$TMP_DIR/toa.tar.gz" "the toa source (toa.tar.gz)"
    verify_sha256 "$TMP_DIR/toa.tar.gz" "$SUM" toa.tar.gz
    SRC_SHA=$SUM
    local dir
    for dir in build pristine; do
        mkdir "$TMP_DIR/$dir" || err "could not create $TMP_DIR/$dir"
        tar -xzf "$TMP_DIR/toa.tar.gz" -C "$TMP_DIR/$dir" ||
            err "could not unpack toa.tar.gz; nothing was changed" "report it to whoever publishes $BASE_URL"
    done
    SRC="$TMP_DIR/build/toa-$TOA_VERSION"
    if [ ! -f "$SRC/Makefile" ] || [ ! -f "$SRC/dkms.conf" ]; then
        err "toa.tar.gz has no toa-$TOA_VERSION/ with a Makefile and dkms.conf: it is from another release than this script" \
            "get this script and toa.tar.gz from the same place: $BASE_URL/$PROG"
    fi
}

# build_module: make, as an operator would by hand.
function build_module {
    say "building toa.ko for $KREL (make KDIR=$KDIR)"
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would run: make -C $SRC KDIR=$KDIR TOA_VERSION=$TOA_VERSION"
        return 0
    fi
    if ! make -C "$SRC" KDIR="$KDIR" TOA_VERSION="$TOA_VERSION" >"$TMP_DIR/build.log" 2>&1; then
        tail -n 40 "$TMP_DIR/build.log" >&2
        err "building toa.ko for $KREL failed (the last lines of the build are above); nothing was installed" \
            "check that the headers match the running kernel exactly (ls -l $KDIR) and that gcc is installed;" \
            "if they do, report the output above with 'uname -r' and your distribution"
    fi
    if [ ! -f "$SRC/toa.ko" ]; then
        err "make finished but $SRC/toa.ko is missing; nothing was installed" "report the build output with 'uname -r'"
    fi
    say "built toa.ko"
}

# dkms_register: the clean source under /usr/src/toa-<version>, then dkms add
# and build for this kernel; load_module runs dkms install. Without dkms the
# module is installed as a plain file.
function dkms_register {
    local src="$ROOT/usr/src/toa-$TOA_VERSION" v
    if ! check_cmd dkms; then
        PLACE=copy
        say "dkms is not installed: after a kernel upgrade run this script again (or install dkms and run it once more, so upgrades rebuild toa by themselves)"
        return 0
    fi
    PLACE=dkms
    if [ "$(cat "$src/.toa-source-sha256" 2>/dev/null)" = "$SRC_SHA" ] &&
        dkms status -m toa -v "$TOA_VERSION" -k "$KREL" 2>/dev/null | grep -q 'installed'; then
        DKMS_UNCHANGED=1
        say "toa $TOA_VERSION from this source is already registered with DKMS and installed for $KREL"
        dkms_built_ko
        return 0
    fi
    for v in $(dkms_versions); do
        act dkms remove -m toa -v "$v" --all || err "dkms remove -m toa -v $v --all failed" "run it by hand and check its output"
    done
    act rm -rf "$src"
    act mkdir -p "$src"
    act cp -R "$TMP_DIR/pristine/toa-$TOA_VERSION/." "$src/" || err "could not copy the source to $src"
    if [ "$DRY_RUN" = 0 ]; then
        printf '%s\n' "$SRC_SHA" >"$src/.toa-source-sha256"
    fi
    act dkms add -m toa -v "$TOA_VERSION" ||
        err "dkms add -m toa -v $TOA_VERSION failed" "its output is above; fix the cause and run this again"
    act dkms build -m toa -v "$TOA_VERSION" -k "$KREL" ||
        err "dkms build -m toa -v $TOA_VERSION -k $KREL failed although make succeeded" \
            "its log is the make.log under /var/lib/dkms/toa/$TOA_VERSION/; fix the cause and run this again"
    if [ "$DRY_RUN" = 0 ]; then
        say "registered toa $TOA_VERSION with DKMS: kernel upgrades rebuild it"
    fi
    dkms_built_ko
}

DKMS_KO=""
# dkms_built_ko: DKMS_KO, the module DKMS built for this kernel (it may be
# signed with DKMS's key, unlike the one make built).
function dkms_built_ko {
    local f
    DKMS_KO="$SRC/toa.ko"
    for f in "$ROOT/var/lib/dkms/toa/$TOA_VERSION/$KREL/$KARCH/module/toa.ko"*; do
        if [ -f "$f" ]; then
            DKMS_KO=$f
        fi
    done
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
    fetch_source
    install_build_deps
    build_module
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: would check the vermagic and signature of the built toa.ko, then install and load it"
    else
        check_vermagic "$SRC/toa.ko"
    fi
    dkms_register
    SAME_BY=build
    local ko="$SRC/toa.ko"
    if [ "$PLACE" = dkms ]; then
        ko=$DKMS_KO
    fi
    if [ "$DRY_RUN" = 0 ]; then
        check_module_signing "$ko"
    fi
    leave_bpf_mode
    write_trusted_proxies "$ko"
    load_module "$ko"
    persist
    prove_install
    show_status
    if [ "$DRY_RUN" = 0 ] && [ "$KMOD_PINNED" = 1 ]; then
        say "done: toa $TOA_VERSION is built, installed and loads at every boot; the new toa.ko takes over at the next reboot, and until then the running toa.ko, which passed the self-test, serves: $PINNED_WHY"
        say "to remove toa: curl -fsSL $BASE_URL/install_toa.sh | sudo bash -s -- --uninstall"
    elif [ "$DRY_RUN" = 0 ]; then
        say "done: toa $TOA_VERSION is built, loaded, and will be loaded at every boot"
        say "to remove toa: curl -fsSL $BASE_URL/install_toa.sh | sudo bash -s -- --uninstall"
    fi
}

main "$@" || exit 1
