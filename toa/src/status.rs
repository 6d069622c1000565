//! `toa status`: what is active, its settings and counters, and whether it
//! is healthy (exit 0) or not (exit 1).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::bpf::Active;
use crate::counters::{self, Sample};
use crate::health::{self, Level, Observed};
use crate::host::Host;
use crate::kmod::{self, printable, Listeners, Loaded};
use crate::mode::Mode;
use toa_sim::toa_stats::Snapshot;

/// Show which toa mode is active, its trust settings and counters, and
/// health lines that explain themselves.
///
/// The counters are read twice, --sample seconds apart, so that a counter
/// that is growing now (not just non-zero since boot) can be told apart.
/// Exit status 0: healthy (warnings allowed unless --strict); 1: not.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between the two readings of the counters.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = crate::stats::parse_seconds)]
    sample: f64,
    /// Treat warnings (e.g. an empty trusted_proxies) as unhealthy too.
    #[arg(long)]
    strict: bool,
}

pub fn run(host: &Host, args: &Args) -> Result<ExitCode> {
    let mode = Mode::detect(host)?;
    let release = host.kernel_release()?;
    println!("mode:    {}", mode.describe());
    println!("kernel:  {release}");
    let installed = kmod::installed(host, &release)?;
    let (mut first, mut second) = (None, None);
    match &mode {
        Mode::Kmod(loaded) => print_settings(loaded),
        Mode::Bpf(active) => print_bpf_settings(active),
        Mode::None => {}
    }
    if mode != Mode::None {
        if let Ok(a) = counters::read(host, &mode) {
            std::thread::sleep(Duration::from_secs_f64(args.sample));
            let b = counters::read(host, &mode)?;
            print_counters(&b, &a);
            (first, second) = (Some(a), Some(b));
        }
    }
    let listeners = match &mode {
        Mode::Kmod(_) => {
            if let Some(s) = &second {
                print_pinned(&s.snapshot);
            }
            let listeners = kmod::listeners(host)?;
            if let Some(l) = &listeners {
                print_listeners(l);
            }
            listeners
        }
        _ => None,
    };
    let findings = health::assess(&Observed {
        mode: &mode,
        release: &release,
        installed: installed.as_ref(),
        first: first.as_ref().map(|s| &s.snapshot),
        second: second.as_ref().map(|s| &s.snapshot),
        window_secs: args.sample,
        tcp_sockets: tcp_sockets(host),
        bpf_pinned_too: matches!(mode, Mode::Kmod(_)) && crate::bpf::pinned(host),
        listeners: listeners.as_ref(),
    });
    println!("health:");
    for f in &findings {
        println!("  {f}");
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    let healthy = worst == Level::Ok || (worst == Level::Warn && !args.strict);
    println!(
        "status:  {}",
        if healthy { "healthy" } else { "NOT healthy" }
    );
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_UNHEALTHY)
    })
}

fn print_settings(l: &Loaded) {
    let shown = |v: &Option<String>, empty: &str| match v.as_deref().map(str::trim) {
        None => "(not readable)".to_string(),
        Some("") => empty.to_string(),
        Some(v) => v.to_string(),
    };
    println!("settings (/sys/module/toa/parameters):");
    println!(
        "  trusted_proxies = {}",
        shown(
            &l.trusted_proxies,
            "(empty: any source may set a client address)"
        )
    );
    println!(
        "  ports           = {}",
        shown(&l.ports, "(empty: listeners on every port)")
    );
    println!(
        "  formats         = {:#x} ({})",
        l.formats_mask(),
        format_names(l.formats_mask())
    );
    println!("  max_records     = {}", shown(&l.max_records, "?"));
}

fn print_bpf_settings(a: &Active) {
    let shown = |v: &str, empty: &str| {
        if v.is_empty() {
            empty.to_string()
        } else {
            v.to_string()
        }
    };
    println!(
        "settings ({}/toa_settings, toa_trusted_v4/v6):",
        toa_bpf::PIN_DIR
    );
    println!(
        "  trusted_proxies = {}",
        shown(
            &a.trusted_proxies,
            "(empty: any source may set a client address)"
        )
    );
    println!(
        "  ports           = {}",
        shown(&a.ports, "(empty: listeners on every port)")
    );
    println!(
        "  formats         = {:#x} ({})",
        a.formats,
        format_names(a.formats)
    );
    println!("  capture         = {} ({})", a.capture.word(), a.capture);
    println!("  cgroup          = {}", a.cgroup);
    println!("  object          = {}", a.object);
}

/// The TOA layouts a `formats` mask accepts (DESIGN "Wire formats").
pub fn format_names(mask: u32) -> String {
    const NAMES: [(u32, &str); 4] = [
        (0x1, "254/8 IPv4"),
        (0x2, "254/20 IPv6"),
        (0x4, "253/20 IPv6"),
        (0x8, "200/8 IPv4"),
    ];
    let on: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if on.is_empty() {
        "none".into()
    } else {
        on.join(", ")
    }
}

fn print_counters(now: &Sample, earlier: &Sample) {
    println!(
        "counters (sum over {} CPUs, /s over the sample):",
        now.snapshot.cpus
    );
    for row in counters::rows(now, Some(earlier)) {
        // A gauge is a level: no rate.
        let rate = match (row.gauge, row.per_second) {
            (true, _) => "  (now)".to_string(),
            (false, Some(r)) => format!("  {r:.1}/s"),
            (false, None) => String::new(),
        };
        println!("  {:<25} {:>12}{rate}", row.name, row.total);
    }
}

/// Whether rmmod is refused until reboot (toa_stats `pinned`; a toa.ko
/// older than that row says nothing).
fn print_pinned(stats: &Snapshot) {
    match stats.get("pinned") {
        Some(0) => println!("pinned:  no"),
        Some(_) => println!(
            "pinned:  yes (rmmod refused until reboot: a socket took kTLS/a TCP ULP; upgrades \
             and uninstall finish at the next reboot)"
        ),
        None => {}
    }
}

fn print_listeners(l: &Listeners) {
    println!("listeners ({}):", kmod::LISTENERS_PATH);
    if let Some(n) = l.armed_at_load {
        println!(
            "  armed at load   {n:>6}  (already listening when toa.ko loaded: new connections \
             get the client)"
        );
    }
    println!(
        "  not armed       {:>6}  (their clients see the proxy)",
        l.unarmed_total
    );
    for u in &l.unarmed {
        let gone = if u.running == Some(false) {
            " (exited)"
        } else {
            ""
        };
        println!(
            "    pid {} {} {} port {}: {}{gone}",
            u.pid,
            printable(&u.comm),
            u.family,
            u.port,
            u.reason
        );
    }
}

/// TCP sockets allocated in all namespaces: /proc/net/sockstat's `alloc`
/// (a global count, unlike `inuse`).
fn tcp_sockets(host: &Host) -> Option<u64> {
    let text = host.read_opt("/proc/net/sockstat").ok()??;
    parse_tcp_alloc(&text)
}

fn parse_tcp_alloc(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "alloc")?;
    words.get(at + 1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_alloc_is_read() {
        let text =
            "sockets: used 200\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_tcp_alloc(text), Some(7));
        assert_eq!(parse_tcp_alloc("UDP: inuse 1\n"), None);
    }

    #[test]
    fn format_names_follow_the_mask() {
        assert_eq!(
            format_names(0xf),
            "254/8 IPv4, 254/20 IPv6, 253/20 IPv6, 200/8 IPv4"
        );
        assert_eq!(format_names(0x8), "200/8 IPv4");
        assert_eq!(format_names(0), "none");
    }
}
