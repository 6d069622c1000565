//! toa.ko as sysfs shows it: loaded or not, version, parameters, taint, and
//! the toa.ko file that would load at the next boot.

use anyhow::{Context, Result};

use crate::host::Host;

pub const SYSFS: &str = "/sys/module/toa";

/// Where the installers (and the seed's manual steps, and DKMS) put toa.ko,
/// relative to /lib/modules/<release>.
const INSTALLED_PATHS: &[&str] = &[
    "updates/toa.ko",
    "updates/dkms/toa.ko",
    "extra/toa.ko",
    "kernel/net/netfilter/ipvs/toa.ko",
];

/// The loaded module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub version: Option<String>,
    pub srcversion: Option<String>,
    /// Taint letters of the module (`O` out of tree, `E` unsigned, `F`
    /// loaded by force, e.g. past a vermagic mismatch).
    pub taint: String,
    pub trusted_proxies: Option<String>,
    pub ports: Option<String>,
    pub formats: Option<String>,
    pub max_records: Option<String>,
}

impl Loaded {
    /// Whether it was loaded by force (`insmod -f`/`modprobe --force`):
    /// a module built for another kernel gets in only that way.
    pub fn forced(&self) -> bool {
        self.taint.contains('F')
    }

    /// The `formats` bitmask (0xf when unreadable: the module's default).
    pub fn formats_mask(&self) -> u32 {
        self.formats.as_deref().and_then(parse_mask).unwrap_or(0xf)
    }
}

fn parse_mask(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Reads /sys/module/toa; `None` when the module is not loaded.
pub fn loaded(host: &Host) -> Result<Option<Loaded>> {
    // `initstate` is "live" once init returned; a built-in module has none,
    // which toa never is.
    match host.read_opt(&format!("{SYSFS}/initstate"))? {
        Some(state) if state == "live" => {}
        _ => return Ok(None),
    }
    let param = |name: &str| host.read_opt(&format!("{SYSFS}/parameters/{name}"));
    Ok(Some(Loaded {
        version: host.read_opt(&format!("{SYSFS}/version"))?,
        srcversion: host.read_opt(&format!("{SYSFS}/srcversion"))?,
        taint: host
            .read_opt(&format!("{SYSFS}/taint"))?
            .unwrap_or_default(),
        trusted_proxies: param("trusted_proxies")?,
        ports: param("ports")?,
        formats: param("formats")?,
        max_records: param("max_records")?,
    }))
}

/// A toa.ko file under /lib/modules/<release>, with what its .modinfo says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub path: String,
    pub vermagic: Option<String>,
    pub srcversion: Option<String>,
}

impl Installed {
    /// The kernel release it was built for: vermagic's first word.
    pub fn built_for(&self) -> Option<&str> {
        self.vermagic.as_deref()?.split_whitespace().next()
    }
}

/// The first toa.ko found where installers put it for `release`.
pub fn installed(host: &Host, release: &str) -> Result<Option<Installed>> {
    for rel in INSTALLED_PATHS {
        let shown = format!("/lib/modules/{release}/{rel}");
        let path = host.path(&shown);
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {shown}"))?;
        return Ok(Some(Installed {
            path: shown,
            vermagic: modinfo(&bytes, "vermagic"),
            srcversion: modinfo(&bytes, "srcversion"),
        }));
    }
    Ok(None)
}

/// A `key=value` string of a module's .modinfo section. The section is a
/// run of NUL-terminated strings, so the key is looked for right after a
/// NUL; no ELF parsing is needed for that.
fn modinfo(bytes: &[u8], key: &str) -> Option<String> {
    let needle = format!("\0{key}=");
    let start = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let len = bytes[start..].iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&bytes[start..start + len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_reads_keys_after_a_nul() {
        let bytes = b"\x7fELF junk\0license=GPL\0vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions \0srcversion=ABC\0";
        assert_eq!(
            modinfo(bytes, "vermagic").as_deref(),
            Some("6.1.0-50-amd64 SMP preempt mod_unload modversions ")
        );
        assert_eq!(modinfo(bytes, "srcversion").as_deref(), Some("ABC"));
        assert_eq!(modinfo(bytes, "author"), None);
        assert_eq!(modinfo(b"\0vermagic=unterminated", "vermagic"), None);
        let i = Installed {
            path: String::new(),
            vermagic: modinfo(bytes, "vermagic"),
            srcversion: None,
        };
        assert_eq!(i.built_for(), Some("6.1.0-50-amd64"));
    }

    #[test]
    fn formats_are_read_as_the_kernel_prints_them() {
        let mut l = Loaded::default();
        assert_eq!(l.formats_mask(), 0xf, "default when unreadable");
        l.formats = Some("9".into());
        assert_eq!(l.formats_mask(), 9);
        l.formats = Some("0x2".into());
        assert_eq!(l.formats_mask(), 2);
        l.taint = "OE".into();
        assert!(!l.forced());
        l.taint = "FOE".into();
        assert!(l.forced());
    }
}
