//! /proc/net/toa_stats: checking that the module counted exactly what the
//! scenarios did. Reading and parsing the file is toa_sim::toa_stats; the
//! counters this lab checks must have one value per CPU.

use crate::error::Result;
use crate::oracle::{Kept, Verdict};

pub use toa_sim::toa_stats::{read, Snapshot, PROC_PATH};

/// What the scenarios did that the module must have counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Handshakes whose completing packet carried a TOA the module honours.
    pub handshakes_toa: u64,
    /// Every other handshake (no TOA, malformed options, untrusted source).
    pub handshakes_no_toa: u64,
    /// ... of which had an option area that cannot be walked.
    pub malformed: u64,
    /// ... of which carried a TOA from a source outside trusted_proxies.
    pub untrusted: u64,
    /// ... of which carried a TOA to a listener outside `ports`.
    pub other_port: u64,
    /// accept()-with-address and getpeername() calls on TOA connections.
    pub getname_on_toa: u64,
    pub getname_on_no_toa: u64,
    /// Connections whose honoured TOA carried an IPv6 client address.
    pub ipv6_toa: u64,
}

impl Ledger {
    /// Books one completed handshake.
    pub fn handshake(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Client { ipv6, .. } => {
                self.handshakes_toa += 1;
                self.ipv6_toa += u64::from(ipv6);
            }
            Verdict::Kernel(why) => {
                self.handshakes_no_toa += 1;
                match why {
                    Kept::Malformed => self.malformed += 1,
                    Kept::Untrusted => self.untrusted += 1,
                    Kept::OtherPort => self.other_port += 1,
                    Kept::NoToa => {}
                }
            }
        }
    }

    /// Books `calls` accept()/getpeername() calls on one connection. Every
    /// answer on a TOA connection is counted; a connection without a record
    /// is counted once, by its first answer, which also gives it back the
    /// kernel's own table (the module never sees its later calls).
    pub fn getnames(&mut self, verdict: Verdict, calls: u64) {
        match verdict {
            Verdict::Client { .. } => self.getname_on_toa += calls,
            Verdict::Kernel(_) => self.getname_on_no_toa += calls.min(1),
        }
    }

    /// What happened since `earlier` (a copy taken before).
    pub fn since(&self, earlier: &Ledger) -> Ledger {
        Ledger {
            handshakes_toa: self.handshakes_toa - earlier.handshakes_toa,
            handshakes_no_toa: self.handshakes_no_toa - earlier.handshakes_no_toa,
            malformed: self.malformed - earlier.malformed,
            untrusted: self.untrusted - earlier.untrusted,
            other_port: self.other_port - earlier.other_port,
            getname_on_toa: self.getname_on_toa - earlier.getname_on_toa,
            getname_on_no_toa: self.getname_on_no_toa - earlier.getname_on_no_toa,
            ipv6_toa: self.ipv6_toa - earlier.ipv6_toa,
        }
    }

    /// Counter deltas the ledger implies, for a module that works.
    pub fn expected_deltas(&self) -> [(&'static str, u64); 11] {
        [
            ("syn_recv_sock_toa", self.handshakes_toa),
            ("syn_recv_sock_no_toa", self.handshakes_no_toa),
            ("options_malformed", self.malformed),
            ("syn_recv_sock_untrusted", self.untrusted),
            ("syn_recv_sock_other_port", self.other_port),
            ("getname_toa_ok", self.getname_on_toa),
            ("getname_toa_empty", self.getname_on_no_toa),
            ("getname_toa_mismatch", 0),
            ("ip6_address_alloc", self.ipv6_toa),
            ("ip6_address_free", self.ipv6_toa),
            ("record_alloc_failed", 0),
        ]
    }
}

/// How much counter `name` grew from `before` to `after` (it must have one
/// value per CPU in both).
pub fn delta(before: &Snapshot, after: &Snapshot, name: &str) -> std::result::Result<i128, String> {
    let (b, a) = match (before.counter(name), after.counter(name)) {
        (Some(b), Some(a)) => (b, a),
        (None, _) => return Err(format!("{name} missing before")),
        (_, None) => return Err(format!("{name} missing after")),
    };
    if let Some(bad) = [(before, b), (after, a)]
        .iter()
        .find(|(s, c)| c.values != s.cpus)
    {
        return Err(format!(
            "{name} has {} values for {} CPU columns",
            bad.1.values, bad.0.cpus
        ));
    }
    Ok(i128::from(a.sum) - i128::from(b.sum))
}

/// A module-wide value (one number, not one per CPU column), such as
/// `records_live` or `listen_armed_at_load`.
pub fn single(snapshot: &Snapshot, name: &str) -> std::result::Result<u64, String> {
    match snapshot.counter(name) {
        None => Err(format!("{name} is missing from {PROC_PATH}")),
        Some(c) if c.values != 1 => Err(format!(
            "{name} has {} values, expected a single one",
            c.values
        )),
        Some(c) => Ok(c.sum),
    }
}

/// Ok with a summary of the deltas, or Err listing every counter that is
/// off as `name: expected +E, saw +S`.
pub fn check(
    before: &Snapshot,
    after: &Snapshot,
    ledger: &Ledger,
) -> std::result::Result<String, String> {
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for (name, want) in ledger.expected_deltas() {
        match delta(before, after, name) {
            Ok(got) if got == i128::from(want) => seen.push(format!("{name}+{got}")),
            Ok(got) => wrong.push(format!("{name}: expected +{want}, saw {got:+}")),
            Err(e) => wrong.push(e),
        }
    }
    if wrong.is_empty() {
        Ok(seen.join(" "))
    } else {
        Err(wrong.join("; "))
    }
}

/// Reads the counters until `settled` holds for them or `limit` has passed
/// (sockets, and the records they free, may outlive close() a little).
pub fn read_until(
    limit: std::time::Duration,
    settled: impl Fn(&Snapshot) -> bool,
) -> Result<Snapshot> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = read()?;
        if settled(&now) || std::time::Instant::now() >= deadline {
            return Ok(now);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// IPv6 client addresses are freed when the socket is destroyed, which can
/// trail close() slightly; the caller polls until this holds.
pub fn ip6_balanced(before: &Snapshot, after: &Snapshot) -> bool {
    matches!(
        (delta(before, after, "ip6_address_alloc"), delta(before, after, "ip6_address_free")),
        (Ok(a), Ok(f)) if a == f
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use toa_sim::toa_stats::{parse, Counter};

    const SAMPLE: &str = "\
                 CPU0       CPU1
syn_recv_sock_toa:          3          4
syn_recv_sock_no_toa:       0         10
getname_toa_ok:             6          8
getname_toa_mismatch:       0          0
getname_toa_empty:          1          1
ip6_address_alloc:          2          0
ip6_address_free:           1          1
options_malformed:          0          0
syn_recv_sock_untrusted:    0          0
syn_recv_sock_other_port:   0          0
record_alloc_failed:        0          0
kretprobe_missed     : 3
";

    fn snap(pairs: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            cpus: 1,
            counters: pairs
                .iter()
                .map(|&(n, v)| Counter {
                    name: n.to_string(),
                    sum: v,
                    values: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn test_parse_sums_cpus_and_keeps_unknown_counters() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.get("syn_recv_sock_toa"), Some(7));
        assert_eq!(s.get("syn_recv_sock_no_toa"), Some(10));
        assert_eq!(s.get("ip6_address_alloc"), Some(2));
        assert_eq!(s.get("syn_recv_sock_untrusted"), Some(0));
        assert_eq!(
            s.get("kretprobe_missed"),
            Some(3),
            "a global counter has one value"
        );
        assert_eq!(s.counters.len(), 12);
        assert_eq!(
            s.counters[0].name, "syn_recv_sock_toa",
            "file order is kept"
        );
        assert_eq!(s.cpus, 2);
    }

    #[test]
    fn test_check_exact_deltas() {
        let before = parse(SAMPLE).unwrap();
        let ledger = Ledger {
            handshakes_toa: 2,
            handshakes_no_toa: 3,
            malformed: 1,
            untrusted: 1,
            other_port: 1,
            getname_on_toa: 4,
            getname_on_no_toa: 6,
            ipv6_toa: 1,
        };
        let mut after = before.clone();
        for (name, add) in ledger.expected_deltas() {
            let slot = after.counters.iter_mut().find(|c| c.name == name).unwrap();
            slot.sum += add;
        }
        let ok = check(&before, &after, &ledger).unwrap();
        assert!(ok.contains("getname_toa_ok+4"), "{ok}");
        assert!(ok.contains("options_malformed+1"), "{ok}");
        assert!(ok.contains("syn_recv_sock_untrusted+1"), "{ok}");
        assert!(ip6_balanced(&before, &after));
    }

    #[test]
    fn test_check_reports_every_wrong_counter() {
        let before = snap(&[
            ("syn_recv_sock_toa", 0),
            ("syn_recv_sock_no_toa", 0),
            ("getname_toa_ok", 0),
            ("getname_toa_empty", 0),
            ("getname_toa_mismatch", 0),
            ("ip6_address_alloc", 0),
        ]);
        let after = snap(&[
            ("syn_recv_sock_toa", 1),
            ("syn_recv_sock_no_toa", 0),
            ("getname_toa_ok", 2),
            ("getname_toa_empty", 0),
            ("getname_toa_mismatch", 1),
            ("ip6_address_alloc", 0),
        ]);
        let ledger = Ledger {
            handshakes_toa: 1,
            getname_on_toa: 2,
            ..Ledger::default()
        };
        let err = check(&before, &after, &ledger).unwrap_err();
        assert!(
            err.contains("getname_toa_mismatch: expected +0, saw +1"),
            "{err}"
        );
        assert!(err.contains("ip6_address_free missing before"), "{err}");
        assert!(!err.contains("getname_toa_ok"), "{err}");
    }

    #[test]
    fn test_ledger_books_verdicts() {
        use std::net::SocketAddr;
        let client: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        let mut l = Ledger::default();
        l.handshake(Verdict::Client { client, ipv6: true });
        l.getnames(Verdict::Client { client, ipv6: true }, 2);
        l.handshake(Verdict::Kernel(Kept::Malformed));
        l.handshake(Verdict::Kernel(Kept::Untrusted));
        l.handshake(Verdict::Kernel(Kept::NoToa));
        l.getnames(Verdict::Kernel(Kept::NoToa), 2);
        let want = Ledger {
            handshakes_toa: 1,
            handshakes_no_toa: 3,
            malformed: 1,
            untrusted: 1,
            other_port: 0,
            getname_on_toa: 2,
            getname_on_no_toa: 1,
            ipv6_toa: 1,
        };
        assert_eq!(l, want);
        assert_eq!(l.since(&Ledger::default()), want);
        assert_eq!(l.since(&l), Ledger::default());
    }

    #[test]
    fn test_checked_counter_must_be_per_cpu() {
        let text = "CPU0 CPU1\ngetname_toa_ok: 4\n";
        let before = parse(text).unwrap();
        let err = delta(&before, &before, "getname_toa_ok").unwrap_err();
        assert_eq!(err, "getname_toa_ok has 1 values for 2 CPU columns");
    }

    #[test]
    fn test_single_value_rows_besides_records_live() {
        let text = "                      CPU0 CPU1\n\
            syn_recv_sock_toa        : 1 0\n\
            kretprobe_missed         : 0\n\
            records_live             : 2\n\
            listen_armed_at_load     : 5\n";
        let s = parse(text).unwrap();
        assert_eq!(single(&s, "listen_armed_at_load"), Ok(5));
        assert_eq!(single(&s, "records_live"), Ok(2));
        assert_eq!(
            single(&s, "syn_recv_sock_toa"),
            Err("syn_recv_sock_toa has 2 values, expected a single one".into())
        );
        assert_eq!(
            single(&s, "listen_armed"),
            Err(format!("listen_armed is missing from {PROC_PATH}"))
        );
    }

    #[test]
    fn test_ip6_balanced() {
        let before = snap(&[("ip6_address_alloc", 5), ("ip6_address_free", 5)]);
        let lagging = snap(&[("ip6_address_alloc", 8), ("ip6_address_free", 7)]);
        let done = snap(&[("ip6_address_alloc", 8), ("ip6_address_free", 8)]);
        assert!(!ip6_balanced(&before, &lagging));
        assert!(ip6_balanced(&before, &done));
        assert!(!ip6_balanced(&before, &snap(&[])));
    }
}
