//! toa.ko as sysfs and procfs show it: loaded or not, version, parameters,
//! taint, the listeners it could not arm (/proc/net/toa_listeners), and the
//! toa.ko file that would load at the next boot.

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

/// Listeners armed at load, and the ones toa.ko could not arm.
pub const LISTENERS_PATH: &str = "/proc/net/toa_listeners";

/// /proc/net/toa_listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// Listeners already open when toa.ko loaded, armed then.
    pub armed_at_load: Option<u64>,
    /// Listeners that could not be armed since the load, all of them (only
    /// the latest are listed).
    pub unarmed_total: u64,
    /// The latest of them, oldest first (the module keeps 32).
    pub unarmed: Vec<Unarmed>,
}

/// A listener toa.ko could not arm: its clients see the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unarmed {
    pub pid: u32,
    /// The process name as the kernel had it (any bytes but NUL, up to 15);
    /// show it through [`printable`].
    pub comm: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub port: u16,
    pub reason: String,
    /// Whether a process with that pid exists now (`None`: not looked).
    pub running: Option<bool>,
}

impl Unarmed {
    /// Its tables were replaced by another module (the only reason the
    /// module gives today).
    pub fn table_replaced(&self) -> bool {
        self.reason.contains("replaced")
    }
}

/// Reads /proc/net/toa_listeners, and whether each listed pid still runs;
/// `None` when the file does not exist (toa.ko not loaded, or older than it).
pub fn listeners(host: &Host) -> Result<Option<Listeners>> {
    let Some(text) = host.read_opt(LISTENERS_PATH)? else {
        return Ok(None);
    };
    let mut listeners = parse_listeners(&text);
    for u in &mut listeners.unarmed {
        u.running = Some(host.path(&format!("/proc/{}", u.pid)).exists());
    }
    Ok(Some(listeners))
}

/// `armed_at_load: N`, `unarmed: N`, then one `pid=.. comm=.. family=..
/// port=.. reason=..` line per listener. Lines that do not parse (a process
/// name can hold a newline) are skipped.
pub fn parse_listeners(text: &str) -> Listeners {
    let mut out = Listeners::default();
    let mut total = 0;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("armed_at_load:") {
            out.armed_at_load = n.trim().parse().ok();
        } else if let Some(n) = line.strip_prefix("unarmed:") {
            total = n.trim().parse().unwrap_or(0);
        } else if let Some(u) = parse_unarmed(line) {
            out.unarmed.push(u);
        }
    }
    out.unarmed_total = total.max(out.unarmed.len() as u64);
    out
}

/// One `pid=812 comm=nginx family=ipv4 port=80 reason=...` line. The name
/// may hold spaces (and `family=`), so it ends at the last ` family=`: what
/// follows it is the module's own text.
fn parse_unarmed(line: &str) -> Option<Unarmed> {
    let rest = line.strip_prefix("pid=")?;
    let (pid, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("comm=")?;
    let at = rest.rfind(" family=")?;
    let (comm, rest) = (&rest[..at], &rest[at + " family=".len()..]);
    let (family, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("port=")?;
    let (port, rest) = rest.split_once(' ')?;
    let reason = rest.strip_prefix("reason=")?;
    Some(Unarmed {
        pid: pid.parse().ok()?,
        comm: comm.to_string(),
        family: family.to_string(),
        port: port.parse().ok()?,
        reason: reason.to_string(),
        running: None,
    })
}

/// A process name as a terminal may show it: control characters (a name can
/// hold escape sequences) escaped.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
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
    fn listeners_are_read_as_the_module_prints_them() {
        let text = "armed_at_load: 3\nunarmed: 40\n\
            pid=812 comm=nginx family=ipv4 port=80 reason=table replaced by another module\n\
            pid=9 comm=Web family=x family=ipv6 port=8443 reason=table replaced by another module\n\
            pid=x comm=bad family=ipv4 port=1 reason=r\n\
            pid=10 comm=short\n";
        let l = parse_listeners(text);
        assert_eq!(l.armed_at_load, Some(3));
        assert_eq!(l.unarmed_total, 40);
        assert_eq!(l.unarmed.len(), 2, "{l:?}");
        let u = &l.unarmed[0];
        assert_eq!(
            (u.pid, u.comm.as_str(), u.family.as_str(), u.port),
            (812, "nginx", "ipv4", 80)
        );
        assert_eq!(u.reason, "table replaced by another module");
        assert!(u.table_replaced());
        assert_eq!(l.unarmed[1].comm, "Web family=x", "a name with spaces");
        assert_eq!(l.unarmed[1].family, "ipv6");
        assert_eq!(l.unarmed[1].port, 8443);

        // Nothing unarmed; a total below the lines listed is raised to them.
        let l = parse_listeners("armed_at_load: 0\nunarmed: 0\n");
        assert_eq!((l.armed_at_load, l.unarmed_total), (Some(0), 0));
        let l = parse_listeners("pid=1 comm=a family=ipv4 port=1 reason=r\n");
        assert_eq!((l.armed_at_load, l.unarmed_total), (None, 1));
    }

    #[test]
    fn process_names_are_shown_without_control_characters() {
        assert_eq!(printable("nginx: worker"), "nginx: worker");
        assert_eq!(printable("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
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
