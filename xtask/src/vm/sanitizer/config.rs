//! The sanitizer kernel's configuration: `make x86_64_defconfig`, then this
//! fragment through `scripts/config`, then `make olddefconfig`, and a check
//! that every line of the fragment survived (an option whose dependencies
//! are not met is silently dropped by kconfig; here it fails the build).
//!
//! What the lab needs is built in (`=y`), so the guest loads no module but
//! toa.ko and the lab's own test modules: TUN, IPv6, kTLS, kprobes, netfilter
//! (toa.ko's sockopt), BPF and cgroups. What makes it a sanitizer kernel:
//! generic KASAN (inline, also over vmalloc, where module memory lives),
//! lockdep with PROVE_RCU, might-sleep checks, list debugging. Drivers the lab
//! never touches (no disk, no NIC, no display under `-nodefaults`) are left
//! out to shorten the build; no debug info or BTF (build time, cache size).

use sha2::{Digest, Sha256};

/// The target that makes the base configuration.
pub const BASE: &str = "x86_64_defconfig";

/// `uname -r` = the source's version + this.
pub const LOCALVERSION: &str = "-toa-sanitizers";

/// One option's wanted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Y,
    N,
    Str(&'static str),
}

/// `(symbol without CONFIG_, value)`, in the order `scripts/config` applies them.
pub const FRAGMENT: &[(&str, Value)] = &[
    // Identity and modules: unsigned toa.ko loads, no versioned symbols.
    ("LOCALVERSION", Value::Str(LOCALVERSION)),
    ("LOCALVERSION_AUTO", Value::N),
    ("MODULES", Value::Y),
    ("MODULE_UNLOAD", Value::Y),
    ("MODULE_SIG", Value::N),
    ("MODVERSIONS", Value::N),
    // What the guest and the lab use, built in.
    ("SERIAL_8250", Value::Y),
    ("SERIAL_8250_CONSOLE", Value::Y),
    ("DEVTMPFS", Value::Y),
    ("TMPFS", Value::Y),
    ("BLK_DEV_INITRD", Value::Y),
    ("RD_GZIP", Value::Y),
    ("ACPI", Value::Y),
    ("NET", Value::Y),
    ("INET", Value::Y),
    ("IPV6", Value::Y),
    ("UNIX", Value::Y),
    ("SYN_COOKIES", Value::Y),
    ("NAMESPACES", Value::Y),
    ("NET_NS", Value::Y),
    ("TUN", Value::Y),
    ("NETFILTER", Value::Y),
    ("TLS", Value::Y),
    ("CRYPTO_AES", Value::Y),
    ("CRYPTO_GCM", Value::Y),
    ("KPROBES", Value::Y),
    ("KRETPROBES", Value::Y),
    ("KALLSYMS", Value::Y),
    ("KALLSYMS_ALL", Value::Y),
    ("CGROUPS", Value::Y),
    ("BPF_SYSCALL", Value::Y),
    ("CGROUP_BPF", Value::Y),
    // Preemption as Debian's 6.1: voluntary by default, switchable at boot
    // (PREEMPT_DYNAMIC builds a preemptible kernel, so RCU Tasks is in).
    ("PREEMPT_NONE", Value::N),
    ("PREEMPT_VOLUNTARY", Value::Y),
    ("PREEMPT_DYNAMIC", Value::Y),
    // The sanitizers.
    ("DEBUG_KERNEL", Value::Y),
    ("KASAN", Value::Y),
    ("KASAN_GENERIC", Value::Y),
    ("KASAN_OUTLINE", Value::N),
    ("KASAN_INLINE", Value::Y),
    ("KASAN_VMALLOC", Value::Y),
    ("PROVE_LOCKING", Value::Y),
    ("PROVE_RCU", Value::Y),
    ("DEBUG_ATOMIC_SLEEP", Value::Y),
    ("DEBUG_LIST", Value::Y),
    // Hangs and lockups reported (and, from the command line, panicking)
    // instead of ending as a timeout.
    ("DETECT_HUNG_TASK", Value::Y),
    ("SOFTLOCKUP_DETECTOR", Value::Y),
    // The lab's lock-wait scenarios stall a copy to user space with it.
    ("USERFAULTFD", Value::Y),
    // Speed and size: no debug info, no BTF.
    ("DEBUG_INFO_NONE", Value::Y),
    ("DEBUG_INFO_BTF", Value::N),
    // Never used under `qemu -nodefaults` with an initramfs.
    ("DRM", Value::N),
    ("SOUND", Value::N),
    ("USB_SUPPORT", Value::N),
    ("WLAN", Value::N),
    ("WIRELESS", Value::N),
    ("CFG80211", Value::N),
    ("ETHERNET", Value::N),
    ("ATA", Value::N),
    ("SCSI", Value::N),
    ("MD", Value::N),
    ("HID", Value::N),
    ("AGP", Value::N),
    ("NETWORK_FILESYSTEMS", Value::N),
    ("HIBERNATION", Value::N),
    ("SUSPEND", Value::N),
];

/// `scripts/config` arguments that apply [`FRAGMENT`].
pub fn script_args() -> Vec<String> {
    let mut args = Vec::new();
    for (symbol, value) in FRAGMENT {
        match value {
            Value::Y => args.extend(["--enable".to_string(), symbol.to_string()]),
            Value::N => args.extend(["--disable".to_string(), symbol.to_string()]),
            Value::Str(s) => {
                args.extend(["--set-str".to_string(), symbol.to_string(), s.to_string()])
            }
        }
    }
    args
}

/// The fragment as `.config` lines, the base target first: what the cache key hashes.
pub fn text() -> String {
    let mut out = format!("# base: make {BASE}\n");
    for (symbol, value) in FRAGMENT {
        out.push_str(&match value {
            Value::Y => format!("CONFIG_{symbol}=y\n"),
            Value::N => format!("# CONFIG_{symbol} is not set\n"),
            Value::Str(s) => format!("CONFIG_{symbol}=\"{s}\"\n"),
        });
    }
    out
}

/// The first 12 hex digits of the sha256 of [`text`].
pub fn hash() -> String {
    hex::encode(Sha256::digest(text().as_bytes()))[..12].to_string()
}

/// Every fragment line that `config` (a `.config`) does not have as asked,
/// as `CONFIG_X=y wanted, got ...`.
pub fn unmet(config: &str) -> Vec<String> {
    let lookup = |symbol: &str| -> Option<&str> {
        let key = format!("CONFIG_{symbol}=");
        config
            .lines()
            .find_map(|line| line.strip_prefix(key.as_str()))
    };
    let mut out = Vec::new();
    for (symbol, value) in FRAGMENT {
        let got = lookup(symbol);
        let ok = match value {
            Value::Y => got == Some("y"),
            Value::N => got.is_none(),
            Value::Str(s) => got == Some(format!("\"{s}\"").as_str()),
        };
        if !ok {
            let wanted = match value {
                Value::Y => "y".to_string(),
                Value::N => "n".to_string(),
                Value::Str(s) => format!("\"{s}\""),
            };
            out.push(format!(
                "CONFIG_{symbol}={wanted} wanted, got {}",
                got.unwrap_or("not set")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_args_apply_each_line() {
        let args = script_args();
        assert_eq!(&args[..3], ["--set-str", "LOCALVERSION", "-toa-sanitizers"]);
        assert!(args.windows(2).any(|w| w == ["--enable", "KASAN_INLINE"]));
        assert!(args.windows(2).any(|w| w == ["--disable", "MODULE_SIG"]));
        assert_eq!(
            args.iter().filter(|a| a.starts_with("--")).count(),
            FRAGMENT.len()
        );
    }

    #[test]
    fn the_lab_needs_are_built_in_and_the_sanitizers_are_on() {
        for symbol in [
            "TUN",
            "IPV6",
            "TLS",
            "KPROBES",
            "KRETPROBES",
            "KALLSYMS_ALL",
            "MODULES",
            "MODULE_UNLOAD",
            "SERIAL_8250_CONSOLE",
            "DEVTMPFS",
            "BLK_DEV_INITRD",
            "BPF_SYSCALL",
            "CGROUP_BPF",
            "CGROUPS",
            "KASAN",
            "KASAN_GENERIC",
            "KASAN_INLINE",
            "PROVE_LOCKING",
            "PROVE_RCU",
            "DEBUG_ATOMIC_SLEEP",
            "DEBUG_LIST",
        ] {
            assert!(FRAGMENT.contains(&(symbol, Value::Y)), "{symbol}");
        }
        for symbol in ["MODULE_SIG", "DEBUG_INFO_BTF"] {
            assert!(FRAGMENT.contains(&(symbol, Value::N)), "{symbol}");
        }
        let symbols: Vec<&str> = FRAGMENT.iter().map(|(s, _)| *s).collect();
        let mut unique = symbols.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), symbols.len(), "a symbol is listed twice");
    }

    #[test]
    fn unmet_names_what_kconfig_dropped() {
        let mut config = text()
            .lines()
            .filter(|l| !l.starts_with("# base"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        assert_eq!(unmet(&config), Vec::<String>::new());
        config = config.replace("CONFIG_KASAN_INLINE=y\n", "CONFIG_KASAN_OUTLINE=y\n");
        config.push_str("CONFIG_MODULE_SIG=y\n");
        config = config.replace("-toa-sanitizers", "-other");
        assert_eq!(
            unmet(&config),
            [
                "CONFIG_LOCALVERSION=\"-toa-sanitizers\" wanted, got \"-other\"",
                "CONFIG_MODULE_SIG=n wanted, got y",
                "CONFIG_KASAN_OUTLINE=n wanted, got y",
                "CONFIG_KASAN_INLINE=y wanted, got not set",
            ]
        );
    }

    #[test]
    fn hash_is_stable_and_short() {
        assert_eq!(hash().len(), 12);
        assert_eq!(hash(), hash());
        assert!(text().starts_with("# base: make x86_64_defconfig\n"));
    }
}
