//! The counters of the active mode: /proc/net/toa_stats for toa.ko, the
//! pinned per-CPU map for the eBPF mode (same names where the meaning is the
//! same), read with a message an operator can act on; what each counter
//! means, and rates between samples.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use toa_sim::toa_stats::{self, Snapshot};

use crate::host::Host;
use crate::mode::Mode;

pub const PROC_PATH: &str = toa_stats::PROC_PATH;
/// Where the eBPF mode's counters are (a per-CPU array map).
pub const BPF_SOURCE: &str = "/sys/fs/bpf/toa/toa_counters";

/// Rows that are a level, not a count: they go down as well as up (or, for
/// `pinned`, a 0/1 state and for `listen_armed_at_load` a number fixed at load).
const GAUGES: &[&str] = &["records_live", "listen_armed_at_load", "pinned"];

/// What each counter counts, as the README's table says it; also the HELP
/// text of the Prometheus output.
const MEANINGS: &[(&str, &str)] = &[
    ("syn_recv_sock_toa", "Handshakes whose completing packet carried a TOA (a record was made)."),
    ("syn_recv_sock_no_toa", "Handshakes without a TOA that was honoured."),
    ("getname_toa_ok", "accept()/getpeername() answers rewritten to the client."),
    ("getname_toa_mismatch", "Answers left alone: a record existed but the kernel's answer was not the proxy it was made for."),
    ("getname_toa_empty", "Connections accepted without a record."),
    ("ip6_address_alloc", "Records holding an IPv6 client created."),
    ("ip6_address_free", "Records holding an IPv6 client released; equals ip6_address_alloc once those connections closed."),
    ("options_malformed", "Option areas that could not be walked: no TOA taken, connection unaffected."),
    ("syn_recv_sock_untrusted", "TOA from a source outside trusted_proxies: ignored."),
    ("record_alloc_failed", "No memory or max_records reached: the kernel's answer stood."),
    ("sockopt_lookup", "dpvs-style getsockopt lookups answered."),
    ("syn_recv_sock_other_port", "TOA to a listener outside ports: ignored."),
    ("getname_kernel_socket", "A record on a socket that belongs to no process: the kernel's answer."),
    ("getname_toa_unfit", "IPv6 client on an AF_INET socket asked by kernel code with a short buffer: the kernel's answer."),
    ("listen_armed", "Listeners taken over at listen()."),
    ("listen_kernel_socket", "Kernel listeners left alone."),
    ("listen_foreign_table", "Listeners whose tables another module had replaced: left alone, no client addresses on them."),
    ("getname_table_replaced", "Sockets with a TOA record whose function table another subsystem replaced with one toa could not wrap: their clients were shown the proxy."),
    ("listen_probe_missed", "Runs of the listener-arming probe the kernel skipped; 0 by construction."),
    ("kretprobe_missed", "Old name of listen_probe_missed (same value), printed for this release only."),
    ("listen_armed_at_load", "Listeners already open when toa.ko loaded, armed then: their new connections get the client from the load on."),
    ("pinned", "1 once toa.ko pinned itself (a socket took kTLS or another TCP ULP): rmmod is refused until reboot."),
    ("records_live", "Records in memory now (a gauge): 0 once every TOA connection has closed."),
    ("syn_recv_sock_kernel_socket", "eBPF mode: handshakes on listeners the kernel made for itself (in-kernel servers): left alone, no client taken."),
    ("getname_family_kept", "eBPF mode: IPv6 clients behind an AF_INET listener, shown the proxy (a getpeername program cannot change the family)."),
];

pub fn meaning(name: &str) -> String {
    MEANINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or_else(|| format!("toa.ko counter {name}."), |(_, m)| m.to_string())
}

pub fn is_gauge(name: &str) -> bool {
    GAUGES.contains(&name)
}

/// One reading of the counters and when it was taken.
pub struct Sample {
    pub snapshot: Snapshot,
    pub at: Instant,
    /// Where they were read.
    pub source: &'static str,
}

/// Reads the counters of `mode`; with no mode active, says so in so many words.
pub fn read(host: &Host, mode: &Mode) -> Result<Sample> {
    let (snapshot, source) = match mode {
        Mode::Kmod(_) | Mode::None => (read_module(host)?, PROC_PATH),
        Mode::Bpf(_) => match crate::bpf::detect(host)? {
            Some(active) => (active.counters, BPF_SOURCE),
            None => bail!("the eBPF mode was unloaded while its counters were being read"),
        },
    };
    Ok(Sample {
        snapshot,
        at: Instant::now(),
        source,
    })
}

fn read_module(host: &Host) -> Result<Snapshot> {
    let path = host.path(PROC_PATH);
    if !path.exists() {
        bail!(
            "{PROC_PATH} does not exist: toa.ko is not loaded and the eBPF mode is not active, \
             so there are no counters (install toa with install_toa.sh or \
             compile_install_toa.sh, or run `toa bpf load`; `toa status` says more)"
        );
    }
    Ok(toa_stats::read_from(&path)?)
}

/// A counter's total now and, given an earlier sample, its change per second.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub gauge: bool,
    pub total: u64,
    pub per_second: Option<f64>,
}

/// Rows in file order; rates only when `earlier` is given and some time
/// passed (a counter that went down, e.g. after a reload, has no rate).
pub fn rows(now: &Sample, earlier: Option<&Sample>) -> Vec<Row> {
    let secs = earlier
        .map(|e| now.at.saturating_duration_since(e.at))
        .filter(|d| *d > Duration::ZERO)
        .map(|d| d.as_secs_f64());
    now.snapshot
        .counters
        .iter()
        .map(|c| {
            let per_second = match (earlier, secs) {
                (Some(e), Some(secs)) => e
                    .snapshot
                    .get(&c.name)
                    .filter(|before| *before <= c.sum)
                    .map(|before| (c.sum - before) as f64 / secs),
                _ => None,
            };
            Row {
                name: c.name.clone(),
                gauge: is_gauge(&c.name),
                total: c.sum,
                per_second,
            }
        })
        .collect()
}

#[cfg(test)]
pub mod fixtures {
    /// /proc/net/toa_stats as the module prints it on a 2-CPU machine.
    pub const TWO_CPUS: &str = "                          CPU0 CPU1
syn_recv_sock_toa        : 3 4
syn_recv_sock_no_toa     : 0 10
getname_toa_ok           : 6 8
getname_toa_mismatch     : 0 0
getname_toa_empty        : 1 1
ip6_address_alloc        : 2 0
ip6_address_free         : 1 1
options_malformed        : 0 0
syn_recv_sock_untrusted  : 0 0
record_alloc_failed      : 0 0
sockopt_lookup           : 0 0
syn_recv_sock_other_port : 0 0
getname_kernel_socket    : 0 0
getname_toa_unfit        : 0 0
listen_armed             : 2 0
listen_kernel_socket     : 0 0
listen_foreign_table     : 0 0
getname_table_replaced   : 0 0
listen_probe_missed      : 0
kretprobe_missed         : 0
listen_armed_at_load     : 3
pinned                   : 0
records_live             : 0
";

    /// The same as the release before printed it: no `getname_table_replaced`,
    /// `listen_probe_missed`, `listen_armed_at_load` or `pinned`.
    pub const PREVIOUS_RELEASE: &str = "                          CPU0 CPU1
syn_recv_sock_toa        : 3 4
syn_recv_sock_no_toa     : 0 10
getname_toa_ok           : 6 8
getname_toa_mismatch     : 0 0
getname_toa_empty        : 1 1
ip6_address_alloc        : 2 0
ip6_address_free         : 1 1
options_malformed        : 0 0
syn_recv_sock_untrusted  : 0 0
record_alloc_failed      : 0 0
sockopt_lookup           : 0 0
syn_recv_sock_other_port : 0 0
getname_kernel_socket    : 0 0
getname_toa_unfit        : 0 0
listen_armed             : 2 0
listen_kernel_socket     : 0 0
listen_foreign_table     : 0 0
kretprobe_missed         : 0
records_live             : 0
";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, at: Instant) -> Sample {
        Sample {
            snapshot: toa_stats::parse(text).unwrap(),
            at,
            source: PROC_PATH,
        }
    }

    #[test]
    fn totals_sum_the_cpus_and_keep_file_order() {
        let now = sample(fixtures::TWO_CPUS, Instant::now());
        let rows = rows(&now, None);
        assert_eq!(rows.len(), 23);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].total),
            ("syn_recv_sock_toa", 7)
        );
        assert_eq!(rows[0].per_second, None);
        let live = rows.iter().find(|r| r.name == "records_live").unwrap();
        assert!(live.gauge);
        assert!(!rows[0].gauge);
    }

    #[test]
    fn the_single_value_rows_are_read_with_their_kind() {
        let now = sample(fixtures::TWO_CPUS, Instant::now());
        let all = rows(&now, None);
        let row = |name: &str| all.iter().find(|r| r.name == name).unwrap().clone();
        for gauge in ["pinned", "listen_armed_at_load", "records_live"] {
            assert!(row(gauge).gauge, "{gauge}");
        }
        for counter in [
            "listen_probe_missed",
            "kretprobe_missed",
            "getname_table_replaced",
        ] {
            assert!(!row(counter).gauge, "{counter}");
        }
        assert_eq!(row("listen_armed_at_load").total, 3);
        assert_eq!(row("pinned").total, 0);
        assert_eq!(now.snapshot.counter("pinned").unwrap().values, 1);
        assert_eq!(
            now.snapshot
                .counter("getname_table_replaced")
                .unwrap()
                .values,
            2
        );
        // The release before, without those rows, still reads.
        let old = sample(fixtures::PREVIOUS_RELEASE, Instant::now());
        assert_eq!(rows(&old, None).len(), 19);
    }

    #[test]
    fn rates_are_per_second_and_absent_for_counters_that_went_down() {
        let t0 = Instant::now();
        let before = sample("CPU0 CPU1\na: 1 1\nb: 9 0\n", t0);
        let after = sample(
            "CPU0 CPU1\na: 6 6\nb: 1 0\nc: 4 0\n",
            t0 + Duration::from_secs(2),
        );
        let rows = rows(&after, Some(&before));
        assert_eq!(rows[0].per_second, Some(5.0));
        assert_eq!(rows[1].per_second, None, "b went down");
        assert_eq!(rows[2].per_second, None, "c is new");
    }

    #[test]
    fn every_counter_of_the_module_has_a_meaning() {
        for text in [fixtures::TWO_CPUS, fixtures::PREVIOUS_RELEASE] {
            let snap = toa_stats::parse(text).unwrap();
            for c in &snap.counters {
                assert!(MEANINGS.iter().any(|(n, _)| *n == c.name), "{}", c.name);
            }
        }
        assert_eq!(meaning("new_one"), "toa.ko counter new_one.");
    }

    #[test]
    fn a_missing_file_says_the_module_is_not_loaded() {
        let empty = std::env::temp_dir().join(format!("toa-counters-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = read(&Host::new(empty.clone()), &Mode::None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("toa.ko is not loaded"), "{err}");
        std::fs::remove_dir_all(empty).unwrap();
    }
}
