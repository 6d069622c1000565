#!/bin/bash
# install_toa.sh: installs toa.ko, the kernel module that makes accept() and
# getpeername() return the real client address an L4 proxy put in a TCP option.
#
#   curl -fsSL @TOA_BASE_URL@/install_toa.sh | sudo bash
#   curl -fsSL @TOA_BASE_URL@/install_toa.sh | sudo bash -s -- --help
#
# It picks the prebuilt module for the running kernel from index.json, checks
# its sha256 and vermagic, loads it, installs it and keeps it loaded at boot.
# Nothing runs until the last line, so a download cut short does nothing.

set -u
PROG=install_toa.sh

# @TOA_LIB@

function usage {
    cat <<EOF
$PROG $TOA_VERSION: install toa.ko for the running kernel

Usage: curl -fsSL $TOA_DEFAULT_BASE_URL/$PROG | sudo bash -s -- [OPTIONS]

Downloads the prebuilt toa.ko for this kernel ($TOA_DEFAULT_BASE_URL/index.json),
verifies its sha256 and vermagic, loads it, installs it under
/lib/modules/\$(uname -r)/updates/ and loads it at every boot
($MODULES_LOAD_CONF with systemd, rc.local otherwise).

Options:
  --dry-run                 print every action, change nothing
  --uninstall               unload toa and remove its files and boot configuration
  --trusted-proxies CIDRS   accept TOA only from these proxies, e.g. 10.0.0.0/8,2001:db8::/32
                            (written to $MODPROBE_CONF)
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
    if [ "$DRY_RUN" = 0 ]; then
        say "done: toa $TOA_VERSION is loaded and will be loaded at every boot of kernel $KREL"
        say "after a kernel upgrade, run this installer again for the new kernel (or use compile_install_toa.sh with dkms installed, which rebuilds toa by itself)"
        say "to remove toa: curl -fsSL $BASE_URL/$PROG | sudo bash -s -- --uninstall"
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
    fetch "$BASE_URL/index.json" "$TMP_DIR/index.json" "the module index"
    find_prebuilt
    if [ -z "$ENTRY" ]; then
        no_prebuilt
        return
    fi
    install_prebuilt
}

main "$@" || exit 1
