//! `toa stats`: the counters summed over CPUs, with per-second rates, as a
//! table, JSON, or node_exporter's textfile-collector format.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::counters::{self, Row};
use crate::host::Host;
use crate::mode::Mode;

/// Print the counters of the active mode summed over CPUs, with their rates
/// per second: toa.ko's /proc/net/toa_stats, or the eBPF mode's pinned map
/// (same names where the meaning is the same).
///
/// Rates come from two readings --interval seconds apart (--watch: between
/// consecutive reports). For Prometheus, write to a file of node_exporter's
/// textfile collector directory, e.g. from cron:
///
///   toa stats --format prometheus > /var/lib/node_exporter/toa.prom.$$ &&
///   mv /var/lib/node_exporter/toa.prom.$$ /var/lib/node_exporter/toa.prom
///
/// Prometheus computes rates itself, so that format waits for nothing.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Report again every SECONDS until interrupted (Ctrl-C).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    watch: Option<f64>,
    /// Seconds between the two readings that give the rates of a single
    /// report; 0 prints totals only.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_non_negative)]
    interval: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object per report, for scripts.
    Json,
    /// Prometheus text format (HELP/TYPE lines, counters end in _total).
    Prometheus,
}

/// A positive, finite number of seconds.
pub fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!("want a positive number of seconds, not {text:?}")),
    }
}

fn parse_non_negative(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "want a number of seconds (0 or more), not {text:?}"
        )),
    }
}

pub fn run(host: &Host, args: &Args) -> Result<ExitCode> {
    let mode = Mode::detect(host)?;
    let mut earlier = counters::read(host, &mode)?;
    if let Some(every) = args.watch {
        loop {
            std::thread::sleep(Duration::from_secs_f64(every));
            let now = counters::read(host, &mode)?;
            print!(
                "{}",
                render(
                    args.format,
                    &counters::rows(&now, Some(&earlier)),
                    now.snapshot.cpus,
                    now.source
                )
            );
            earlier = now;
        }
    }
    let rows = if args.format == Format::Prometheus || args.interval == 0.0 {
        counters::rows(&earlier, None)
    } else {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        let now = counters::read(host, &mode)?;
        counters::rows(&now, Some(&earlier))
    };
    print!(
        "{}",
        render(args.format, &rows, earlier.snapshot.cpus, earlier.source)
    );
    Ok(ExitCode::SUCCESS)
}

fn render(format: Format, rows: &[Row], cpus: usize, source: &str) -> String {
    match format {
        Format::Table => table(rows, cpus),
        Format::Json => json(rows, cpus, source),
        Format::Prometheus => prometheus(rows),
    }
}

pub fn table(rows: &[Row], cpus: usize) -> String {
    let mut out = format!(
        "{:<25} {:>14} {:>12}   (sum over {cpus} CPUs)\n",
        "counter", "total", "per second"
    );
    for r in rows {
        let rate = match (r.gauge, r.per_second) {
            (true, _) => "(gauge)".to_string(),
            (false, Some(v)) => format!("{v:.1}"),
            (false, None) => "-".to_string(),
        };
        out.push_str(&format!("{:<25} {:>14} {:>12}\n", r.name, r.total, rate));
    }
    out
}

pub fn json(rows: &[Row], cpus: usize, source: &str) -> String {
    let counters: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "kind": if r.gauge { "gauge" } else { "counter" },
                "total": r.total,
                "per_second": if r.gauge { None } else { r.per_second },
            })
        })
        .collect();
    let doc = serde_json::json!({ "source": source, "cpus": cpus, "counters": counters });
    format!("{doc}\n")
}

/// node_exporter textfile-collector format: one family per counter, named
/// `toa_<counter>_total` (gauges without `_total`), HELP from the README.
pub fn prometheus(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let (name, kind) = if r.gauge {
            (format!("toa_{}", r.name), "gauge")
        } else {
            (format!("toa_{}_total", r.name), "counter")
        };
        let help = counters::meaning(&r.name)
            .replace('\\', "\\\\")
            .replace('\n', " ");
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
            r.total
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::fixtures::{PREVIOUS_RELEASE, TWO_CPUS};
    use crate::counters::Sample;
    use std::time::Instant;

    fn rows_of(text: &str) -> Vec<Row> {
        let now = Sample {
            snapshot: toa_sim::toa_stats::parse(text).unwrap(),
            at: Instant::now(),
            source: counters::PROC_PATH,
        };
        counters::rows(&now, None)
    }

    fn scrape_of(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("valid Prometheus text")
    }

    /// The value of `metric` in `scrape` (parsed from `text`, shown if it is missing).
    fn sample(
        scrape: &prometheus_parse::Scrape,
        metric: &str,
        text: &str,
    ) -> prometheus_parse::Value {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{metric} missing:\n{text}"))
    }

    #[test]
    fn prometheus_output_parses_as_the_text_format() {
        let text = prometheus(&rows_of(TWO_CPUS));
        let scrape = scrape_of(&text);
        assert_eq!(scrape.samples.len(), 23);
        let value = |metric: &str| sample(&scrape, metric, &text);
        assert_eq!(
            value("toa_syn_recv_sock_toa_total"),
            prometheus_parse::Value::Counter(7.0)
        );
        assert_eq!(
            value("toa_records_live"),
            prometheus_parse::Value::Gauge(0.0)
        );
        assert!(scrape.docs.contains_key("toa_getname_toa_ok_total"));
    }

    /// The single-value rows the module added (gauges and totals) and the
    /// per-CPU `getname_table_replaced` export with the right kinds, and the
    /// previous release's file still exports.
    #[test]
    fn prometheus_exports_the_new_rows_with_their_kinds() {
        let text = TWO_CPUS
            .replace(
                "pinned                   : 0",
                "pinned                   : 1",
            )
            .replace(
                "getname_table_replaced   : 0 0",
                "getname_table_replaced   : 2 3",
            )
            .replace(
                "listen_probe_missed      : 0",
                "listen_probe_missed      : 4",
            )
            .replace(
                "kretprobe_missed         : 0",
                "kretprobe_missed         : 4",
            );
        let out = prometheus(&rows_of(&text));
        let scrape = scrape_of(&out);
        let value = |metric: &str| sample(&scrape, metric, &out);
        use prometheus_parse::Value::{Counter, Gauge};
        assert_eq!(value("toa_pinned"), Gauge(1.0));
        assert_eq!(value("toa_listen_armed_at_load"), Gauge(3.0));
        assert_eq!(value("toa_getname_table_replaced_total"), Counter(5.0));
        assert_eq!(value("toa_listen_probe_missed_total"), Counter(4.0));
        assert_eq!(value("toa_kretprobe_missed_total"), Counter(4.0));
        for name in [
            "toa_pinned",
            "toa_listen_armed_at_load",
            "toa_getname_table_replaced_total",
            "toa_listen_probe_missed_total",
        ] {
            let help = &scrape.docs[name];
            assert!(!help.starts_with("toa.ko counter"), "{name}: {help}");
        }

        let old = prometheus_parse::Scrape::parse(
            prometheus(&rows_of(PREVIOUS_RELEASE))
                .lines()
                .map(|l| Ok(l.to_string())),
        )
        .expect("valid Prometheus text");
        assert_eq!(old.samples.len(), 19);
        assert!(!old.samples.iter().any(|s| s.metric == "toa_pinned"));
    }

    #[test]
    fn json_exports_the_new_rows_with_their_kinds() {
        let v: serde_json::Value =
            serde_json::from_str(&json(&rows_of(TWO_CPUS), 2, counters::PROC_PATH)).unwrap();
        let row = |name: &str| {
            v["counters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("{name} missing: {v}"))
                .clone()
        };
        assert_eq!(row("pinned")["kind"], "gauge");
        assert_eq!(row("pinned")["total"], 0);
        assert_eq!(row("listen_armed_at_load")["kind"], "gauge");
        assert_eq!(row("listen_armed_at_load")["total"], 3);
        assert_eq!(row("getname_table_replaced")["kind"], "counter");
        assert_eq!(row("listen_probe_missed")["kind"], "counter");
        assert_eq!(row("kretprobe_missed")["kind"], "counter");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_sample() {
        let text = prometheus(&rows_of(TWO_CPUS));
        let lines: Vec<&str> = text.lines().collect();
        for chunk in lines.chunks(3) {
            let name = chunk[2].split(' ').next().unwrap();
            assert!(
                chunk[0].starts_with(&format!("# HELP {name} ")),
                "{chunk:?}"
            );
            assert!(
                chunk[1].starts_with(&format!("# TYPE {name} ")),
                "{chunk:?}"
            );
        }
    }

    #[test]
    fn json_has_totals_kinds_and_rates() {
        let mut rows = rows_of(TWO_CPUS);
        rows[0].per_second = Some(2.5);
        let v: serde_json::Value =
            serde_json::from_str(&json(&rows, 2, counters::PROC_PATH)).unwrap();
        assert_eq!(v["cpus"], 2);
        assert_eq!(v["counters"][0]["name"], "syn_recv_sock_toa");
        assert_eq!(v["counters"][0]["total"], 7);
        assert_eq!(v["counters"][0]["per_second"], 2.5);
        assert_eq!(v["counters"][1]["per_second"], serde_json::Value::Null);
        assert_eq!(v["counters"][22]["name"], "records_live");
        assert_eq!(v["counters"][22]["kind"], "gauge");
    }

    #[test]
    fn table_lines_up_names_totals_and_rates() {
        let mut rows = rows_of(TWO_CPUS);
        rows[0].per_second = Some(2.5);
        let t = table(&rows, 2);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("sum over 2 CPUs"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["syn_recv_sock_toa", "7", "2.5"]
        );
        assert!(lines.last().unwrap().ends_with("(gauge)"));
    }

    #[test]
    fn seconds_must_be_positive() {
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("inf").is_err());
        assert_eq!(parse_non_negative("0"), Ok(0.0));
    }
}
