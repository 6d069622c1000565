//! /proc/net/toa_stats: reading and parsing it.
//!
//! Format: a header of CPU columns (`CPU0 CPU1 ...`), then one line per
//! counter, `name: v0 v1 ...`, one value per CPU column. The module adds
//! global rows with a single value (`listen_probe_missed` and its old name
//! `kretprobe_missed`, and the gauges `listen_armed_at_load`, `pinned` and
//! `records_live`); those parse too, and `Counter::values` tells them apart.

use std::fmt;
use std::path::Path;

use crate::error::{sim_err, Context, Result};

pub const PROC_PATH: &str = "/proc/net/toa_stats";

/// Counter values summed over CPUs, in file order (unknown names included,
/// so they show up in the STATS line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Columns in the header.
    pub cpus: usize,
    pub counters: Vec<Counter>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    pub sum: u64,
    /// How many values the line had (normally `cpus`).
    pub values: usize,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counter(name).map(|c| c.sum)
    }

    pub fn counter(&self, name: &str) -> Option<&Counter> {
        self.counters.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Snapshot {
    /// `name=sum name=sum ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .counters
            .iter()
            .map(|c| format!("{}={}", c.name, c.sum))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

pub fn read() -> Result<Snapshot> {
    read_from(Path::new(PROC_PATH))
}

/// Reads the counters from `path` (the proc file, or a copy of it).
pub fn read_from(path: &Path) -> Result<Snapshot> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).context(format!("reading {shown}"))?;
    parse(&text).context(format!("parsing {shown}"))
}

pub fn parse(text: &str) -> Result<Snapshot> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| sim_err!("empty file"))?;
    let cpus = header.split_whitespace().count();
    if cpus == 0 || !header.split_whitespace().all(|c| c.starts_with("CPU")) {
        return Err(sim_err!("header {header:?} is not a list of CPU columns"));
    }
    let mut counters = Vec::new();
    for line in lines {
        let (name, values) = line
            .split_once(':')
            .ok_or_else(|| sim_err!("line {line:?} has no `name:`"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(sim_err!("line {line:?} has no counter name"));
        }
        let values = values
            .split_whitespace()
            .map(|v| v.parse::<u64>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| sim_err!("counter {name} has a value that is not a number: {line:?}"))?;
        if values.is_empty() {
            return Err(sim_err!("counter {name} has no value"));
        }
        if counters.iter().any(|c: &Counter| c.name == name) {
            return Err(sim_err!("counter {name} appears twice"));
        }
        let sum = values.iter().try_fold(0u64, |acc, &v| acc.checked_add(v));
        let sum = sum.ok_or_else(|| sim_err!("counter {name} overflows when summed"))?;
        counters.push(Counter {
            name: name.to_string(),
            sum,
            values: values.len(),
        });
    }
    Ok(Snapshot { cpus, counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_single_cpu_without_padding() {
        let s = parse("CPU0\ngetname_toa_ok: 5\n").unwrap();
        assert_eq!(s.get("getname_toa_ok"), Some(5));
    }

    #[test]
    fn test_parse_rejects_bad_input() {
        assert!(parse("").is_err(), "empty");
        assert!(
            parse("foo bar\na: 1 2\n").is_err(),
            "header without CPU columns"
        );
        assert!(parse("CPU0 CPU1\na:\n").is_err(), "no value");
        assert!(parse("CPU0\na: x\n").is_err(), "not a number");
        assert!(parse("CPU0\na 1\n").is_err(), "no colon");
        assert!(parse("CPU0\na: 1\na: 2\n").is_err(), "duplicate counter");
        assert!(
            parse("CPU0 CPU1\na: 18446744073709551615 1\n").is_err(),
            "overflow"
        );
    }

    #[test]
    fn test_display_is_stats_line_body() {
        let s = parse("CPU0\na: 1\nb: 2\n").unwrap();
        assert_eq!(s.to_string(), "a=1 b=2");
    }

    #[test]
    fn test_parse_module_layout_with_padded_names() {
        // As the module prints it: names padded before the colon.
        let s = parse("                      CPU0 CPU1\nsyn_recv_sock_toa    : 1 0\nkretprobe_missed     : 0\n").unwrap();
        assert_eq!(s.get("syn_recv_sock_toa"), Some(1));
        assert_eq!(s.get("kretprobe_missed"), Some(0));
    }

    #[test]
    fn test_parse_single_value_rows_of_this_release() {
        // toa_stats.c: `%-25s` then `:` and one value per CPU, or `: %lu`.
        let text = "                          CPU0 CPU1
listen_foreign_table     : 0 1
getname_table_replaced   : 2 3
listen_probe_missed      : 0
kretprobe_missed         : 0
listen_armed_at_load     : 3
pinned                   : 1
records_live             : 4
";
        let s = parse(text).unwrap();
        assert_eq!(s.cpus, 2);
        let row = |name: &str| s.counter(name).unwrap();
        assert_eq!(
            (
                row("getname_table_replaced").sum,
                row("getname_table_replaced").values
            ),
            (5, 2)
        );
        for (name, sum) in [
            ("listen_probe_missed", 0),
            ("kretprobe_missed", 0),
            ("listen_armed_at_load", 3),
            ("pinned", 1),
            ("records_live", 4),
        ] {
            assert_eq!((row(name).sum, row(name).values), (sum, 1), "{name}");
        }
    }
}
