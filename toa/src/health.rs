//! Health lines: each says what was seen, why it matters and what to do.
//! Pure functions of what `status` read, so every rule is tested on fixtures.

use std::fmt;

use toa_sim::toa_stats::Snapshot;

use crate::bpf::Active;
use crate::kmod::{printable, Installed, Listeners, Loaded, Unarmed};
use crate::mode::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Works, but something deserves the operator's attention.
    Warn,
    /// Some clients are (or will be) shown the proxy's address.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.text)
    }
}

fn finding(level: Level, text: impl Into<String>) -> Finding {
    Finding {
        level,
        text: text.into(),
    }
}

/// Everything `assess` judges.
pub struct Observed<'a> {
    pub mode: &'a Mode,
    /// `uname -r`.
    pub release: &'a str,
    /// The toa.ko under /lib/modules/<release>, if any.
    pub installed: Option<&'a Installed>,
    /// Two readings of the counters, `window_secs` apart (module loaded).
    pub first: Option<&'a Snapshot>,
    pub second: Option<&'a Snapshot>,
    pub window_secs: f64,
    /// TCP sockets allocated now, all namespaces (/proc/net/sockstat `alloc`).
    pub tcp_sockets: Option<u64>,
    /// toa.ko is loaded and the eBPF mode's pins exist as well.
    pub bpf_pinned_too: bool,
    /// /proc/net/toa_listeners (`None`: a toa.ko older than that file).
    pub listeners: Option<&'a Listeners>,
}

pub fn assess(o: &Observed<'_>) -> Vec<Finding> {
    let loaded = match o.mode {
        Mode::Kmod(loaded) => loaded,
        Mode::Bpf(active) => return bpf(active, o),
        Mode::None => {
            return vec![finding(
                Level::Fail,
                "no toa mode is active: applications see the proxy's address, not the client's; \
                 install toa with install_toa.sh (or compile_install_toa.sh), or on kernels \
                 >= 5.10 run `toa bpf load`",
            )]
        }
    };
    let mut out = vec![finding(Level::Ok, "toa.ko is loaded")];
    if o.bpf_pinned_too {
        out.push(finding(
            Level::Warn,
            format!(
                "the eBPF mode is attached too ({}): toa.ko was loaded after it; keep one mode \
                 (`toa bpf unload`, or unload toa.ko)",
                toa_bpf::PIN_DIR
            ),
        ));
    }
    let pinned = o.second.and_then(|s| s.get("pinned")).unwrap_or(0) > 0;
    out.extend(kernel_match(loaded, o.release, o.installed, pinned));
    out.extend(trust(
        loaded.trusted_proxies.as_deref(),
        "echo 10.0.0.0/8 > /sys/module/toa/parameters/trusted_proxies",
    ));
    match (o.first, o.second) {
        (Some(first), Some(second)) => {
            out.extend(counters(
                first,
                second,
                o.window_secs,
                loaded,
                o.tcp_sockets,
                o.listeners.is_some(),
            ));
            out.extend(module_state(second));
        }
        _ => out.push(finding(
            Level::Fail,
            "toa.ko is loaded but /proc/net/toa_stats cannot be read: the module is not the one \
             this command knows, or it is half loaded",
        )),
    }
    if let Some(listeners) = o.listeners {
        out.extend(unarmed(listeners));
    }
    out
}

/// The module's state: pinned until reboot, listeners armed at its load.
fn module_state(stats: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    if stats.get("pinned").unwrap_or(0) > 0 {
        out.push(finding(
            Level::Ok,
            "toa.ko is pinned until the next reboot (a socket took kTLS or another TCP ULP, which \
             copied toa's function table): rmmod toa is refused, so an upgrade or an uninstall \
             finishes at the next reboot (the running toa.ko serves until then)",
        ));
    }
    if let Some(armed) = stats.get("listen_armed_at_load").filter(|n| *n > 0) {
        out.push(finding(
            Level::Ok,
            format!(
                "{armed} listeners were already open when toa.ko loaded and were armed then: \
                 their new connections get the client; connections they had before keep the \
                 proxy's address"
            ),
        ));
    }
    out
}

/// Listeners toa.ko could not arm (/proc/net/toa_listeners): one line each,
/// naming the process, and what the operator can do about it.
fn unarmed(listeners: &Listeners) -> Vec<Finding> {
    let mut out: Vec<Finding> = listeners.unarmed.iter().map(unarmed_one).collect();
    let listed = listeners.unarmed.len() as u64;
    if listeners.unarmed_total > listed {
        out.push(finding(
            Level::Warn,
            format!(
                "{} listeners could not be armed since toa.ko loaded, their clients see the \
                 proxy; the latest {listed} are in {}",
                listeners.unarmed_total,
                crate::kmod::LISTENERS_PATH
            ),
        ));
    }
    out
}

fn unarmed_one(u: &Unarmed) -> Finding {
    let comm = printable(&u.comm);
    let pid = u.pid;
    let listener = format!("listener on port {} ({})", u.port, u.family);
    if u.running == Some(false) {
        return finding(
            Level::Ok,
            format!(
                "{comm} (pid {pid}) had a {listener} that toa could not arm ({}); that process \
                 has exited",
                u.reason
            ),
        );
    }
    let text = if u.table_replaced() {
        format!(
            "restart {comm} (pid {pid})? no: its {listener} could not be armed: another module \
             replaced its tables, so its clients see the proxy, and a restarted {comm} gets \
             that module's tables again; find the module that replaced them (`lsmod`: another \
             TOA or socket-hooking module), unload it or keep it off that socket, then restart \
             {comm}"
        )
    } else {
        format!(
            "{comm} (pid {pid}): its {listener} could not be armed ({}), so its clients see the \
             proxy; `dmesg | grep -i toa` says more, then restart {comm}",
            u.reason
        )
    };
    finding(Level::Warn, text)
}

/// `pinned`: the running toa.ko cannot be unloaded before the next reboot.
fn kernel_match(
    loaded: &Loaded,
    release: &str,
    installed: Option<&Installed>,
    pinned: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if loaded.forced() {
        out.push(finding(
            Level::Fail,
            format!(
                "toa.ko was loaded by force (taint {:?}): it was built for another kernel than \
                 {release}, and a module built for another kernel can crash this one; unload it \
                 and install the one built for {release}",
                loaded.taint
            ),
        ));
    }
    match installed {
        None => out.push(finding(
            Level::Warn,
            format!(
                "no toa.ko under /lib/modules/{release}: the running module will not load again \
                 after a reboot (install_toa.sh puts it in updates/ and loads it at boot)"
            ),
        )),
        Some(i) => match i.built_for() {
            Some(built) if built != release => out.push(finding(
                Level::Fail,
                format!(
                    "{} was built for kernel {built}, but this is {release}: it will not load at \
                     the next boot; install the toa.ko built for {release}",
                    i.path
                ),
            )),
            None => out.push(finding(
                Level::Warn,
                format!("{} has no vermagic: it is not a kernel module", i.path),
            )),
            Some(_) if i.srcversion.is_some() && i.srcversion != loaded.srcversion => {
                out.push(finding(
                    Level::Warn,
                    format!(
                        "{} (srcversion {}) is not the running toa.ko (srcversion {}): the next \
                         boot loads a different build{}",
                        i.path,
                        i.srcversion.as_deref().unwrap_or("?"),
                        loaded.srcversion.as_deref().unwrap_or("?"),
                        if pinned {
                            " (the running one is pinned: an upgrade installed since takes over \
                             at the next reboot)"
                        } else {
                            ""
                        }
                    ),
                ))
            }
            Some(_) => out.push(finding(
                Level::Ok,
                format!("{} is built for this kernel ({release})", i.path),
            )),
        },
    }
    out
}

/// `how`: the command that sets the list in this mode.
fn trust(trusted_proxies: Option<&str>, how: &str) -> Vec<Finding> {
    match trusted_proxies.map(str::trim) {
        None | Some("") => vec![finding(
            Level::Warn,
            format!(
                "trusted_proxies is empty: any host that can reach this origin may claim any \
                 client address; set it to your proxies' networks, e.g. {how}"
            ),
        )],
        Some(list) => vec![finding(
            Level::Ok,
            format!("only {list} may set a client address"),
        )],
    }
}

/// The eBPF mode: attached, its trust list, and what its counters show.
fn bpf(active: &Active, o: &Observed<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    if active.problems.is_empty() {
        out.push(finding(
            Level::Ok,
            format!(
                "the eBPF mode is attached at {}, pinned under {}; connections accepted \
                 before it was loaded keep the proxy's address",
                active.cgroup,
                toa_bpf::PIN_DIR
            ),
        ));
    }
    if active.object_differs {
        out.push(finding(
            Level::Warn,
            format!("the loaded programs are not this toa's: {}", active.object),
        ));
    }
    for problem in &active.problems {
        out.push(finding(
            Level::Fail,
            format!(
                "the eBPF mode is pinned under {} but does not run: {problem}; applications \
                 see the proxy's address. Run `toa bpf load` again: it attaches afresh",
                toa_bpf::PIN_DIR
            ),
        ));
    }
    out.extend(trust(
        Some(&active.trusted_proxies),
        "toa bpf load --trusted-proxies 10.0.0.0/8 (updates it in place)",
    ));
    let (Some(first), Some(second)) = (o.first, o.second) else {
        out.push(finding(
            Level::Fail,
            "the eBPF mode's counters cannot be read: its pinned maps are damaged or belong to \
             another version; run `toa bpf load` again",
        ));
        return out;
    };
    let now = |name: &str| second.get(name).unwrap_or(0);
    let grew = |name: &str| now(name).saturating_sub(first.get(name).unwrap_or(0));
    let kept = grew("getname_family_kept");
    if kept > 0 {
        out.push(finding(
            Level::Warn,
            format!(
                "getname_family_kept grew by {kept} in {:.0} s: IPv6 clients reached AF_INET \
                 listeners and were shown the proxy (the eBPF mode cannot change an answer's \
                 family); listen on AF_INET6 (dual-stack), or use toa.ko",
                o.window_secs
            ),
        ));
    } else {
        out.push(finding(
            Level::Ok,
            format!(
                "counters: {} TOA handshakes, {} rewritten answers so far",
                now("syn_recv_sock_toa"),
                now("getname_toa_ok")
            ),
        ));
    }
    out
}

/// `listeners_known`: /proc/net/toa_listeners was read, and names the
/// listeners `listen_foreign_table` counts.
fn counters(
    first: &Snapshot,
    second: &Snapshot,
    window_secs: f64,
    loaded: &Loaded,
    tcp_sockets: Option<u64>,
    listeners_known: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let now = |name: &str| second.get(name).unwrap_or(0);
    let grew = |name: &str| now(name).saturating_sub(first.get(name).unwrap_or(0));
    let window = format!("{window_secs:.0} s");

    // kretprobe_missed is the old name, which older modules print alone.
    let missed_name = if second.get("listen_probe_missed").is_some() {
        "listen_probe_missed"
    } else {
        "kretprobe_missed"
    };
    let missed = now(missed_name);
    if missed > 0 {
        out.push(finding(
            Level::Fail,
            format!(
                "{missed_name} is {missed}: the kernel skipped arming that many listeners, whose \
                 clients see the proxy; restart those services (they arm at listen())"
            ),
        ));
    }
    let replaced = now("getname_table_replaced");
    let replaced_now = grew("getname_table_replaced");
    let replaced_what = "sockets with a TOA record had their function table replaced by another \
         module with one toa cannot wrap, and their clients were shown the proxy; `dmesg | grep \
         toa` names that table's getname function and its module: unload that module, or keep \
         it off the ports behind the proxy";
    if replaced_now > 0 {
        out.push(finding(
            Level::Fail,
            format!("getname_table_replaced grew by {replaced_now} in {window}: {replaced_what}"),
        ));
    } else if replaced > 0 {
        out.push(finding(
            Level::Warn,
            format!("getname_table_replaced is {replaced} (not growing now): {replaced_what}"),
        ));
    }
    let foreign = now("listen_foreign_table");
    if foreign > 0 && !listeners_known {
        out.push(finding(
            Level::Warn,
            format!(
                "listen_foreign_table is {foreign}: another module had replaced those listeners' \
                 tables, so toa left them alone and their clients see the proxy"
            ),
        ));
    }
    let mismatch = grew("getname_toa_mismatch");
    if mismatch > 0 {
        out.push(finding(
            Level::Warn,
            format!(
                "getname_toa_mismatch grew by {mismatch} in {window}: answers on TOA connections \
                 were not the proxy the record was made for and were left alone (a socket whose \
                 peer changed, or another module rewriting addresses)"
            ),
        ));
    }
    let failed = grew("record_alloc_failed");
    if failed > 0 {
        out.push(finding(
            Level::Fail,
            format!(
                "record_alloc_failed grew by {failed} in {window}: clients were shown the proxy for \
                 lack of memory or because max_records ({}) is reached",
                loaded.max_records.as_deref().unwrap_or("?")
            ),
        ));
    }
    out.extend(records(first, second, loaded, tcp_sockets));
    if out.iter().all(|f| f.level == Level::Ok) {
        out.push(finding(
            Level::Ok,
            format!(
                "counters: {} TOA handshakes, {} rewritten answers so far; nothing was skipped or lost",
                now("syn_recv_sock_toa"),
                now("getname_toa_ok")
            ),
        ));
    }
    out
}

/// records_live is a gauge: open TOA connections hold records, so any value
/// can be right. It is wrong only above what could hold one: more records
/// than TCP sockets exist (both readings, so a connection closing in
/// between cannot fool it), or more than were ever made.
fn records(
    first: &Snapshot,
    second: &Snapshot,
    loaded: &Loaded,
    tcp_sockets: Option<u64>,
) -> Option<Finding> {
    let live_first = first.get("records_live")?;
    let live = second.get("records_live")?;
    let steady = live_first.min(live);
    let made = second.get("syn_recv_sock_toa").unwrap_or(0);
    if steady > made {
        return Some(finding(
            Level::Fail,
            format!(
                "records_live is {live} but only {made} TOA handshakes were ever counted: records \
                 are not returned; reload toa.ko when convenient and report this"
            ),
        ));
    }
    if let Some(sockets) = tcp_sockets.filter(|s| steady > *s) {
        return Some(finding(
            Level::Fail,
            format!(
                "records_live stays at {steady} while only {sockets} TCP sockets exist: records \
                 outlive their connections (a leak); reload toa.ko when convenient and report this"
            ),
        ));
    }
    let limit = loaded
        .max_records
        .as_deref()
        .and_then(|m| m.parse::<u64>().ok());
    if let Some(limit) = limit.filter(|l| live >= *l) {
        return Some(finding(
            Level::Warn,
            format!("records_live is at max_records ({limit}): new TOA connections get the proxy"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::fixtures::{PREVIOUS_RELEASE, TWO_CPUS};
    use crate::kmod::parse_listeners;
    use toa_sim::toa_stats::parse;

    fn loaded() -> Loaded {
        Loaded {
            version: Some("0.1.0".into()),
            srcversion: Some("ABC".into()),
            taint: "OE".into(),
            trusted_proxies: Some("10.0.0.0/8".into()),
            ports: Some(String::new()),
            formats: Some("15".into()),
            max_records: Some("1048576".into()),
        }
    }

    fn installed(vermagic: &str, srcversion: &str) -> Installed {
        Installed {
            path: "/lib/modules/6.1.0-50-amd64/updates/toa.ko".into(),
            vermagic: Some(vermagic.into()),
            srcversion: Some(srcversion.into()),
        }
    }

    /// The fixture with `changes` applied as `name: value` rows.
    fn stats(changes: &[(&str, &str)]) -> Snapshot {
        let text: String = TWO_CPUS
            .lines()
            .map(|line| {
                let name = line.split(':').next().unwrap().trim();
                match changes.iter().find(|(n, _)| *n == name) {
                    Some((n, v)) => format!("{n}: {v}\n"),
                    None => format!("{line}\n"),
                }
            })
            .collect();
        parse(&text).unwrap()
    }

    fn judge(mode: &Mode, inst: Option<&Installed>, a: &Snapshot, b: &Snapshot) -> Vec<Finding> {
        assess(&Observed {
            mode,
            release: "6.1.0-50-amd64",
            installed: inst,
            first: Some(a),
            second: Some(b),
            window_secs: 1.0,
            tcp_sockets: Some(100),
            bpf_pinned_too: false,
            listeners: None,
        })
    }

    fn active(trusted: &str) -> Active {
        Active {
            trusted_proxies: trusted.into(),
            ports: String::new(),
            formats: 0xf,
            capture: toa_bpf::Capture::Fexit,
            problems: vec![],
            cgroup: "/sys/fs/cgroup (the cgroup v2 root)".into(),
            scoped_to: None,
            object: "toa 0.0.0, this binary's".into(),
            object_differs: false,
            counters: parse("CPU0\nsyn_recv_sock_toa: 0\n").unwrap(),
        }
    }

    /// After an upgrade of the binary alone, status says the programs are
    /// another toa's and how to replace them: a warning, not a failure.
    #[test]
    fn programs_of_another_toa_are_a_warning_that_says_how_to_replace_them() {
        let a = parse("CPU0\nsyn_recv_sock_toa: 2\n").unwrap();
        let mut older = active("10.0.0.0/8");
        older.object = "toa 0.0.1 (object sha256 0123456789ab); this binary is toa 0.1.0 \
             (object sha256 ba9876543210): `toa bpf load` replaces the programs in place"
            .into();
        older.object_differs = true;
        let f = judge(&Mode::Bpf(older), None, &a, &a);
        assert_eq!(worst(&f), Level::Warn, "{f:?}");
        let warn = text_of(&f, Level::Warn);
        assert!(warn.contains("not this toa's: toa 0.0.1"), "{warn}");
        assert!(warn.contains("toa bpf load"), "{warn}");
        let same = judge(&Mode::Bpf(active("10.0.0.0/8")), None, &a, &a);
        assert_eq!(worst(&same), Level::Ok, "{same:?}");
    }

    #[test]
    fn a_pinned_but_detached_bpf_mode_is_unhealthy() {
        let a = parse("CPU0\nsyn_recv_sock_toa: 2\n").unwrap();
        let mut detached = active("10.0.0.0/8");
        detached.problems = vec!["toa_getpeername4 is detached: its link (id 7) is pinned \
             but attached to no cgroup"
            .into()];
        let f = judge(&Mode::Bpf(detached), None, &a, &a);
        assert_eq!(worst(&f), Level::Fail, "{f:?}");
        let fail = text_of(&f, Level::Fail);
        assert!(fail.contains("toa_getpeername4 is detached"), "{fail}");
        assert!(fail.contains("toa bpf load"), "{fail}");
        assert!(!text_of(&f, Level::Ok).contains("is attached at"), "{f:?}");
    }

    #[test]
    fn an_attached_bpf_mode_is_ok_and_warns_about_an_empty_trust_list() {
        let a = parse(
            "CPU0 CPU1\nsyn_recv_sock_toa: 2 3\ngetname_toa_ok: 4 4\ngetname_family_kept: 1 0\n",
        )
        .unwrap();
        let f = judge(&Mode::Bpf(active("10.0.0.0/8")), None, &a, &a);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        assert!(text_of(&f, Level::Ok).contains("5 TOA handshakes, 8 rewritten"));
        let f = judge(&Mode::Bpf(active("")), None, &a, &a);
        assert_eq!(worst(&f), Level::Warn, "{f:?}");
        assert!(text_of(&f, Level::Warn).contains("toa bpf load --trusted-proxies"));
    }

    #[test]
    fn bpf_ipv6_clients_on_ipv4_listeners_are_a_warning() {
        let a = parse("CPU0\ngetname_family_kept: 1\n").unwrap();
        let b = parse("CPU0\ngetname_family_kept: 4\n").unwrap();
        let f = judge(&Mode::Bpf(active("10.0.0.0/8")), None, &a, &b);
        assert_eq!(worst(&f), Level::Warn, "{f:?}");
        assert!(text_of(&f, Level::Warn).contains("getname_family_kept grew by 3"));
    }

    #[test]
    fn bpf_counters_that_cannot_be_read_fail() {
        let f = assess(&Observed {
            mode: &Mode::Bpf(active("10.0.0.0/8")),
            release: "6.1.0-50-amd64",
            installed: None,
            first: None,
            second: None,
            window_secs: 1.0,
            tcp_sockets: None,
            bpf_pinned_too: false,
            listeners: None,
        });
        assert_eq!(worst(&f), Level::Fail, "{f:?}");
    }

    #[test]
    fn both_modes_at_once_are_a_warning() {
        let s = stats(&[]);
        let inst = installed("6.1.0-50-amd64 SMP mod_unload", "ABC");
        let f = assess(&Observed {
            mode: &Mode::Kmod(loaded()),
            release: "6.1.0-50-amd64",
            installed: Some(&inst),
            first: Some(&s),
            second: Some(&s),
            window_secs: 1.0,
            tcp_sockets: Some(100),
            bpf_pinned_too: true,
            listeners: None,
        });
        assert_eq!(worst(&f), Level::Warn, "{f:?}");
        assert!(text_of(&f, Level::Warn).contains("toa bpf unload"));
    }

    fn worst(findings: &[Finding]) -> Level {
        findings.iter().map(|f| f.level).max().unwrap()
    }

    fn text_of(findings: &[Finding], level: Level) -> String {
        findings
            .iter()
            .filter(|f| f.level == level)
            .map(|f| f.text.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_quiet_healthy_module_is_ok() {
        let s = stats(&[]);
        let inst = installed("6.1.0-50-amd64 SMP mod_unload", "ABC");
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        assert!(text_of(&f, Level::Ok).contains("7 TOA handshakes, 14 rewritten"));
    }

    #[test]
    fn no_module_is_a_failure() {
        let f = assess(&Observed {
            mode: &Mode::None,
            release: "6.1.0-50-amd64",
            installed: None,
            first: None,
            second: None,
            window_secs: 1.0,
            tcp_sockets: None,
            bpf_pinned_too: false,
            listeners: None,
        });
        assert_eq!(worst(&f), Level::Fail);
        assert!(f[0].text.contains("no toa mode is active"));
    }

    #[test]
    fn empty_trusted_proxies_warns() {
        let mut l = loaded();
        l.trusted_proxies = Some(String::new());
        let s = stats(&[]);
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let f = judge(&Mode::Kmod(l), Some(&inst), &s, &s);
        assert_eq!(worst(&f), Level::Warn);
        assert!(text_of(&f, Level::Warn).contains("trusted_proxies is empty"));
    }

    #[test]
    fn a_module_for_another_kernel_fails() {
        let s = stats(&[]);
        let other = installed("6.1.0-49-amd64 SMP", "ABC");
        let f = judge(&Mode::Kmod(loaded()), Some(&other), &s, &s);
        assert!(
            text_of(&f, Level::Fail).contains("built for kernel 6.1.0-49-amd64"),
            "{f:?}"
        );
        let mut forced = loaded();
        forced.taint = "FOE".into();
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let f = judge(&Mode::Kmod(forced), Some(&inst), &s, &s);
        assert!(
            text_of(&f, Level::Fail).contains("loaded by force"),
            "{f:?}"
        );
    }

    #[test]
    fn growing_mismatch_warns_but_an_old_total_does_not() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let old = stats(&[("getname_toa_mismatch", "5 0")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &old, &old);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        let more = stats(&[("getname_toa_mismatch", "5 3")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &old, &more);
        assert!(
            text_of(&f, Level::Warn).contains("getname_toa_mismatch grew by 3"),
            "{f:?}"
        );
    }

    #[test]
    fn missed_probes_and_foreign_tables_are_named() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let s = stats(&[
            ("listen_probe_missed", "2"),
            ("kretprobe_missed", "2"),
            ("listen_foreign_table", "1 0"),
        ]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert!(text_of(&f, Level::Fail).contains("listen_probe_missed is 2"));
        assert!(!text_of(&f, Level::Fail).contains("kretprobe_missed"));
        assert!(text_of(&f, Level::Warn).contains("listen_foreign_table is 1"));
    }

    #[test]
    fn an_older_module_s_kretprobe_missed_is_read_instead() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let s =
            parse(&PREVIOUS_RELEASE.replace("kretprobe_missed         : 0", "kretprobe_missed: 4"))
                .unwrap();
        assert_eq!(s.get("listen_probe_missed"), None);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert_eq!(worst(&f), Level::Fail, "{f:?}");
        assert!(
            text_of(&f, Level::Fail).contains("kretprobe_missed is 4"),
            "{f:?}"
        );
        // And healthy when 0: the rows it lacks are not findings.
        let s = parse(PREVIOUS_RELEASE).unwrap();
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        assert!(!text_of(&f, Level::Ok).contains("pinned"), "{f:?}");
    }

    #[test]
    fn replaced_tables_fail_while_growing_and_warn_after() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let old = stats(&[("getname_table_replaced", "1 1")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &old, &old);
        assert_eq!(worst(&f), Level::Warn, "{f:?}");
        assert!(
            text_of(&f, Level::Warn).contains("getname_table_replaced is 2 (not growing now)"),
            "{f:?}"
        );
        assert!(text_of(&f, Level::Warn).contains("dmesg | grep toa"));
        let more = stats(&[("getname_table_replaced", "1 4")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &old, &more);
        assert_eq!(worst(&f), Level::Fail, "{f:?}");
        assert!(
            text_of(&f, Level::Fail).contains("getname_table_replaced grew by 3 in 1 s"),
            "{f:?}"
        );
        assert!(!text_of(&f, Level::Warn).contains("getname_table_replaced"));
    }

    #[test]
    fn a_pinned_module_is_ok_and_says_when_upgrades_finish() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let s = stats(&[("pinned", "1")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        let ok = text_of(&f, Level::Ok);
        assert!(
            ok.contains("toa.ko is pinned until the next reboot"),
            "{f:?}"
        );
        assert!(ok.contains("kTLS"), "{f:?}");
        assert!(
            ok.contains("an upgrade or an uninstall finishes at the next reboot"),
            "{f:?}"
        );
        // Not pinned: no such line.
        let s = stats(&[]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert!(!text_of(&f, Level::Ok).contains("pinned"), "{f:?}");
        // Pinned with another build installed (an upgrade waiting for the reboot).
        let s = stats(&[("pinned", "1")]);
        let newer = installed("6.1.0-50-amd64 SMP", "XYZ");
        let f = judge(&Mode::Kmod(loaded()), Some(&newer), &s, &s);
        assert!(
            text_of(&f, Level::Warn).contains("takes over at the next reboot"),
            "{f:?}"
        );
    }

    #[test]
    fn listeners_armed_at_load_are_reported() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let s = stats(&[]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert!(
            text_of(&f, Level::Ok).contains("3 listeners were already open when toa.ko loaded"),
            "{f:?}"
        );
        let s = stats(&[("listen_armed_at_load", "0")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &s, &s);
        assert!(!text_of(&f, Level::Ok).contains("already open"), "{f:?}");
    }

    fn judge_listeners(text: &str, running: bool) -> Vec<Finding> {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        let s = stats(&[("listen_foreign_table", "1 0")]);
        let mut l = parse_listeners(text);
        for u in &mut l.unarmed {
            u.running = Some(running);
        }
        assess(&Observed {
            mode: &Mode::Kmod(loaded()),
            release: "6.1.0-50-amd64",
            installed: Some(&inst),
            first: Some(&s),
            second: Some(&s),
            window_secs: 1.0,
            tcp_sockets: Some(100),
            bpf_pinned_too: false,
            listeners: Some(&l),
        })
    }

    #[test]
    fn each_unarmed_listener_is_a_warning_naming_its_process() {
        let f = judge_listeners(
            "armed_at_load: 3\nunarmed: 2\n\
             pid=812 comm=nginx family=ipv4 port=80 reason=table replaced by another module\n\
             pid=90 comm=haproxy family=ipv6 port=443 reason=table replaced by another module\n",
            true,
        );
        assert_eq!(worst(&f), Level::Warn, "{f:?}");
        let warn: Vec<&Finding> = f.iter().filter(|f| f.level == Level::Warn).collect();
        assert_eq!(
            warn.len(),
            2,
            "one per listener, none for the counter: {f:?}"
        );
        assert!(
            warn[0]
                .text
                .starts_with("restart nginx (pid 812)? no: its listener on port 80 (ipv4)"),
            "{f:?}"
        );
        assert!(
            warn[0].text.contains("another module replaced its tables"),
            "{f:?}"
        );
        assert!(
            warn[0].text.contains("find the module that replaced them"),
            "{f:?}"
        );
        assert!(
            warn[1]
                .text
                .starts_with("restart haproxy (pid 90)? no: its listener on port 443 (ipv6)"),
            "{f:?}"
        );
    }

    #[test]
    fn unarmed_listeners_of_exited_processes_and_beyond_the_list() {
        let line = "pid=812 comm=nginx family=ipv4 port=80 reason=table replaced by another module";
        let f = judge_listeners(&format!("armed_at_load: 0\nunarmed: 1\n{line}\n"), false);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        assert!(text_of(&f, Level::Ok).contains("nginx (pid 812)"), "{f:?}");
        assert!(text_of(&f, Level::Ok).contains("has exited"), "{f:?}");
        let f = judge_listeners(&format!("armed_at_load: 0\nunarmed: 40\n{line}\n"), false);
        assert!(
            text_of(&f, Level::Warn).contains("40 listeners could not be armed"),
            "{f:?}"
        );
        // A name is shown without its control characters.
        let f = judge_listeners(
            "unarmed: 1\npid=7 comm=x\u{1b}[2J family=ipv4 port=80 reason=table replaced by another module\n",
            true,
        );
        assert!(!text_of(&f, Level::Warn).contains('\u{1b}'), "{f:?}");
        // Nothing unarmed: nothing said, and the counter's line is not repeated.
        let f = judge_listeners("armed_at_load: 0\nunarmed: 0\n", true);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        assert!(!text_of(&f, Level::Ok).contains("listen_foreign_table"));
    }

    #[test]
    fn live_records_are_judged_as_a_gauge() {
        let inst = installed("6.1.0-50-amd64 SMP", "ABC");
        // Open connections hold records: fine.
        let open = stats(&[("records_live", "5")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &open, &open);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        // Dropping to 0 in the second reading: connections closed, fine.
        let closed = stats(&[("records_live", "0")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &open, &closed);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
        // More than were ever made, or than TCP sockets exist: a leak.
        let leak = stats(&[("records_live", "8")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &leak, &leak);
        assert!(
            text_of(&f, Level::Fail).contains("only 7 TOA handshakes"),
            "{f:?}"
        );
        let many = stats(&[("syn_recv_sock_toa", "500 0"), ("records_live", "150")]);
        let f = judge(&Mode::Kmod(loaded()), Some(&inst), &many, &many);
        assert!(
            text_of(&f, Level::Fail).contains("only 100 TCP sockets"),
            "{f:?}"
        );
    }

    #[test]
    fn missing_install_and_other_build_warn() {
        let s = stats(&[]);
        let f = judge(&Mode::Kmod(loaded()), None, &s, &s);
        assert!(text_of(&f, Level::Warn).contains("will not load again after a reboot"));
        let other_build = installed("6.1.0-50-amd64 SMP", "XYZ");
        let f = judge(&Mode::Kmod(loaded()), Some(&other_build), &s, &s);
        assert!(
            text_of(&f, Level::Warn).contains("is not the running toa.ko"),
            "{f:?}"
        );
    }
}
