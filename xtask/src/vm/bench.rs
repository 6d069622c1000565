//! `cargo xtask bench`: what toa.ko costs a connection, and what a build
//! costs a kernel. Results go to `target/bench/` as JSON and a markdown table.
//!
//! Module cost: one guest boot under `qemu -icount shift=0,sleep=off` (guest
//! time advances per executed instruction, so figures repeat run to run)
//! with one vCPU; `toa-lab bench` alternates module unloaded/loaded over
//! several rounds (see `lab/src/bench.rs`). Medians per state and the
//! loaded/unloaded ratio are reported per figure.
//!
//! Build cost: a cold build (an empty cache: the chroot builder's rootfs by
//! debootstrap, packages, kernel headers, Rust objects) and a warm rebuild of
//! the same kernel, then
//! the newest kernels of Debian 11, 12, 13 and unstable one build at a time
//! and two at a time (warm builders), all timed on the host's wall clock.

use crate::host::needs::Needs;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Distro release whose newest kernel is measured.
    #[arg(long, default_value = "debian-12", value_parser = crate::distro::recipe::parse)]
    pub distro: crate::distro::Recipe,
    /// Rounds of (unloaded, loaded) measurements.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Seconds of guest time per figure, round and state.
    #[arg(long, default_value_t = 2.0)]
    pub window: f64,
    /// One short round of the module cost only (what the test command runs).
    #[arg(long)]
    pub smoke: bool,
    /// Skip the build-cost part.
    #[arg(long)]
    pub no_build_cost: bool,
}

/// The figures `toa-lab bench` reports per round and state.
const FIGURES: &[(&str, &str)] = &[
    ("accept_per_s", "loopback connect+accept+close /s"),
    (
        "getpeername_plain_per_s",
        "getpeername /s, plain connection",
    ),
    ("getpeername_toa_per_s", "getpeername /s, TOA connection"),
    ("toa_setup_per_s", "TOA connections /s (simulator)"),
];

#[derive(Debug, Serialize, PartialEq)]
pub struct Figure {
    pub name: String,
    pub unloaded_median: f64,
    pub loaded_median: f64,
    /// loaded / unloaded: 1.0 is free, 0.95 costs 5 %.
    pub ratio: f64,
    pub unloaded: Vec<f64>,
    pub loaded: Vec<f64>,
    /// The eBPF mode with the capture the kernel accepted (`module=bpf`
    /// lines), when the guest measured it.
    pub bpf: Option<Measured>,
    /// The eBPF mode with the sock_ops capture (`module=bpf-sock-ops`).
    pub bpf_sock_ops: Option<Measured>,
    /// The eBPF mode scoped to one cgroup (`--cgroup`), measured from a
    /// process outside it (`module=bpf-scoped-out`): what other services pay.
    pub bpf_scoped_out: Option<Measured>,
    /// ... from a process inside it (`module=bpf-scoped-in`).
    pub bpf_scoped_in: Option<Measured>,
    /// No toa: a do-nothing getpeername program on that cgroup, from a
    /// process outside it (`module=noop-scoped-out`): the floor the kernel
    /// sets for everyone once any cgroup has such a program.
    pub noop_scoped_out: Option<Measured>,
}

/// One more state's samples of a figure.
#[derive(Debug, Serialize, PartialEq)]
pub struct Measured {
    pub median: f64,
    /// median / unloaded median.
    pub ratio: f64,
    pub samples: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct ModuleCost {
    distro: String,
    kernel: String,
    clock: &'static str,
    rounds: u32,
    window_s: f64,
    figures: Vec<Figure>,
    /// The capture path of the `bpf` state (`toa bpf load --capture auto`).
    bpf_capture: Option<String>,
    allocations_per_ipv4_toa_connection: Option<f64>,
}

#[derive(Debug, Serialize)]
struct BuildCost {
    distro: String,
    cold_s: f64,
    warm_s: f64,
    /// The releases whose newest kernel the matrix builds.
    matrix_kernels: Vec<String>,
    matrix_j1_s: f64,
    matrix_j2_s: f64,
}

impl Args {
    /// Boots a kernel with a module built first.
    pub fn needs(&self) -> Result<Needs> {
        Ok(Needs::vm("bench", true))
    }
}

pub fn run(args: Args) -> Result<()> {
    let out_dir = crate::host::cache::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let distro = args.distro.distro(None)?;
    let (rounds, window) = if args.smoke {
        (1, 0.5)
    } else {
        (args.rounds, args.window)
    };
    let cost = module_cost(&distro, rounds, window)?;
    let md = module_markdown(&cost);
    write(&out_dir, "module", &cost, &md)?;
    println!("{md}");
    if args.smoke || args.no_build_cost {
        return Ok(());
    }
    let build = build_cost(&distro)?;
    let md = build_markdown(&build);
    write(&out_dir, "build", &build, &md)?;
    println!("{md}");
    Ok(())
}

fn write<T: Serialize>(dir: &std::path::Path, name: &str, value: &T, md: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    crate::host::fs::write_atomic(&dir.join(format!("{name}.json")), json.as_bytes())?;
    crate::host::fs::write_atomic(&dir.join(format!("{name}.md")), md.as_bytes())?;
    eprintln!("wrote {}/{name}.json and {name}.md", dir.display());
    Ok(())
}

fn module_cost(distro: &crate::distro::Distro, rounds: u32, window: f64) -> Result<ModuleCost> {
    let module = crate::vm::vm_test::packed_module(distro)?;
    let lab_args = format!(
        "toa_lab.args={}",
        crate::vm::vm_test::guest_command(&[
            "bench".to_string(),
            "--module".into(),
            crate::vm::vm_test::GUEST_MODULE.into(),
            "--rounds".into(),
            rounds.to_string(),
            "--window".into(),
            window.to_string(),
            // The eBPF mode (both capture paths, and scoped to a cgroup seen
            // from outside and inside it) as more states of the same boot.
            "--toa".into(),
            "/bin/toa".into(),
        ])
    );
    let opts = crate::vm::vm_test::LabOptions {
        // Four figures, six states, a few seconds each, in instruction time;
        // TCG runs the guest several times slower than that on a busy host.
        timeout: Duration::from_secs(600 + u64::from(rounds) * ((window + 1.0) * 300.0) as u64),
        append: lab_args,
        qemu_args: vec!["-icount".into(), "shift=0,sleep=off".into()],
        cpus: 1,
        ..crate::vm::vm_test::LabOptions::default()
    };
    let report = crate::vm::vm_test::run_lab(distro, &module, &opts)?;
    report.check().context("the benchmark guest failed")?;
    let console = std::fs::read_to_string(&report.console_log)
        .with_context(|| format!("reading {}", report.console_log.display()))?;
    let (figures, allocs) = aggregate(&console)?;
    Ok(ModuleCost {
        bpf_capture: bpf_capture(&console),
        distro: distro.name.clone(),
        kernel: report.release.clone(),
        clock: "qemu -icount shift=0,sleep=off (instruction-counted guest time), 1 vCPU",
        rounds,
        window_s: window,
        figures,
        allocations_per_ipv4_toa_connection: allocs,
    })
}

/// The `capture=` the guest reported for the `bpf` state.
fn bpf_capture(console: &str) -> Option<String> {
    console
        .lines()
        .filter(|l| l.contains("TOA-LAB BENCH ") && l.contains(" module=bpf "))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("capture="))
                .map(str::to_string)
        })
}

/// Medians and ratios from the guest's `TOA-LAB BENCH` lines.
pub fn aggregate(console: &str) -> Result<(Vec<Figure>, Option<f64>)> {
    // Keyed by figure and state: "unloaded", "loaded" (toa.ko), "bpf",
    // "bpf-sock-ops", "bpf-scoped-out", "bpf-scoped-in" or "noop-scoped-out".
    let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut allocs = None;
    for line in console.lines() {
        let Some(rest) = line.split("TOA-LAB BENCH ").nth(1) else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if let Some(a) = fields.get("allocs_per_v4_toa") {
            allocs = Some(a.parse().context("allocs_per_v4_toa")?);
            continue;
        }
        let state = match fields.get("module") {
            Some(
                &s @ ("loaded" | "unloaded" | "bpf" | "bpf-sock-ops" | "bpf-scoped-out"
                | "bpf-scoped-in" | "noop-scoped-out"),
            ) => s,
            _ => bail!(
                "a BENCH line without module=loaded|unloaded|bpf|bpf-sock-ops|bpf-scoped-out|\
                 bpf-scoped-in|noop-scoped-out: {rest}"
            ),
        };
        for (name, _) in FIGURES {
            let v: f64 = fields
                .get(name)
                .with_context(|| format!("BENCH line without {name}: {rest}"))?
                .parse()
                .with_context(|| format!("{name} in {rest}"))?;
            samples.entry((name, state)).or_default().push(v);
        }
    }
    let mut figures = Vec::new();
    for (name, _) in FIGURES {
        let (Some(off), Some(on)) = (
            samples.get(&(name, "unloaded")),
            samples.get(&(name, "loaded")),
        ) else {
            bail!("the guest reported no {name} for both states");
        };
        let (m_off, m_on) = (median(off), median(on));
        let ratio = |m: f64| if m_off > 0.0 { m / m_off } else { f64::NAN };
        let other = |state: &str| {
            samples.get(&(name, state)).map(|v| Measured {
                median: median(v),
                ratio: ratio(median(v)),
                samples: v.clone(),
            })
        };
        figures.push(Figure {
            name: name.to_string(),
            unloaded_median: m_off,
            loaded_median: m_on,
            ratio: ratio(m_on),
            unloaded: off.clone(),
            loaded: on.clone(),
            bpf: other("bpf"),
            bpf_sock_ops: other("bpf-sock-ops"),
            bpf_scoped_out: other("bpf-scoped-out"),
            bpf_scoped_in: other("bpf-scoped-in"),
            noop_scoped_out: other("noop-scoped-out"),
        });
    }
    Ok((figures, allocs))
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn module_markdown(c: &ModuleCost) -> String {
    let mut md = format!(
        "### toa.ko cost on {} ({}), {} round(s) of {} s per figure and state; clock: {}\n\n\
         | figure | unloaded (median) | loaded (median) | loaded/unloaded |\n|---|---:|---:|---:|\n",
        c.distro, c.kernel, c.rounds, c.window_s, c.clock
    );
    for f in &c.figures {
        let label = FIGURES
            .iter()
            .find(|(n, _)| *n == f.name)
            .map_or(f.name.as_str(), |(_, l)| l);
        md.push_str(&format!(
            "| {label} | {:.0} | {:.0} | {:.3} |\n",
            f.unloaded_median, f.loaded_median, f.ratio
        ));
        let bpf_label = match &c.bpf_capture {
            Some(capture) => format!("eBPF mode ({capture})"),
            None => "eBPF mode".to_string(),
        };
        for (state, m) in [
            (bpf_label.as_str(), &f.bpf),
            ("eBPF mode (sock-ops)", &f.bpf_sock_ops),
            (
                "eBPF mode scoped to a cgroup, process outside it",
                &f.bpf_scoped_out,
            ),
            (
                "eBPF mode scoped to a cgroup, process inside it",
                &f.bpf_scoped_in,
            ),
            (
                "no toa, a do-nothing getpeername program on that cgroup, process outside it",
                &f.noop_scoped_out,
            ),
        ] {
            if let Some(m) = m {
                md.push_str(&format!(
                    "| {label}, {state} | {:.0} | {:.0} | {:.3} |\n",
                    f.unloaded_median, m.median, m.ratio
                ));
            }
        }
    }
    if let Some(a) = c.allocations_per_ipv4_toa_connection {
        md.push_str(&format!(
            "\nHeap allocations per IPv4 TOA connection (records_live with connections held): {a:.2}\n"
        ));
    }
    md
}

fn timed(what: &str, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    eprintln!("bench: {what}");
    let start = Instant::now();
    f().with_context(|| format!("bench step: {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("bench: {what}: {secs:.1} s");
    Ok(secs)
}

/// The Debian releases whose kernels make the build matrix (5.10 to 7.x).
const MATRIX: &[&str] = &["debian-11", "debian-12", "debian-13", "debian-unstable"];

/// `cargo xtask build --distro D --latest 1` as a child process; with `cache`, in that
/// cache directory instead of the developer's.
fn build_cmd(cache: Option<&std::path::Path>, distro: &str) -> duct::Expression {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // One kernel (the newest): `build` alone builds the whole release.
    let mut args = vec!["xtask", "build", "--distro", distro, "--latest", "1"];
    if cache.is_some() {
        // The chroot builder keeps its rootfs in the cache directory, so an
        // empty cache is a really cold start (a container engine would keep
        // its builder images elsewhere).
        args.extend(["--backend", "chroot"]);
    }
    let mut cmd = duct::cmd(cargo, &args)
        .dir(crate::host::cache::project_root())
        .stdout_null()
        .stderr_null();
    if let Some(dir) = cache {
        cmd = cmd.env("TOA_CACHE_DIR", dir);
    }
    cmd
}

/// Builds `distros`, `jobs` release builds at a time.
fn matrix(distros: &[&str], jobs: usize) -> Result<()> {
    for chunk in distros.chunks(jobs.max(1)) {
        let running: Vec<(&str, duct::Handle)> = chunk
            .iter()
            .map(|d| Ok((*d, build_cmd(None, d).unchecked().start()?)))
            .collect::<Result<_>>()?;
        for (d, handle) in running {
            let out = handle.wait()?;
            if !out.status.success() {
                bail!("cargo xtask build --distro {d} failed ({})", out.status);
            }
        }
    }
    Ok(())
}

fn build_cost(distro: &crate::distro::Distro) -> Result<BuildCost> {
    let cache: PathBuf = crate::host::cache::target_dir()
        .join("bench")
        .join("build-cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("clearing {}", cache.display()))?;
    }
    let name = distro.name.as_str();
    let build_in_cache = || -> Result<()> {
        build_cmd(Some(&cache), name).run()?;
        Ok(())
    };
    let cold_s = timed("cold build (empty cache)", build_in_cache)?;
    let warm_s = timed("warm rebuild of the same kernel", build_in_cache)?;
    timed("warming the four Debian releases' builders", || {
        matrix(MATRIX, 1)
    })?;
    let matrix_j1_s = timed("four Debian kernels, one build at a time", || {
        matrix(MATRIX, 1)
    })?;
    let matrix_j2_s = timed("four Debian kernels, two builds at a time", || {
        matrix(MATRIX, 2)
    })?;
    Ok(BuildCost {
        distro: name.to_string(),
        cold_s,
        warm_s,
        matrix_kernels: MATRIX.iter().map(|d| d.to_string()).collect(),
        matrix_j1_s,
        matrix_j2_s,
    })
}

fn build_markdown(b: &BuildCost) -> String {
    format!(
        "### Build cost for {} (host wall clock)\n\n| build | seconds |\n|---|---:|\n\
         | one kernel, cold (empty cache, chroot builder) | {:.1} |\n| same kernel, warm | {:.1} |\n\
         | {} (newest kernel each), one build at a time | {:.1} |\n| the same, two builds at a time | {:.1} |\n",
        b.distro,
        b.cold_s,
        b.warm_s,
        b.matrix_kernels.join(", "),
        b.matrix_j1_s,
        b.matrix_j2_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
TOA-LAB START expect=bench kernel=6.1.0-50-amd64
TOA-LAB BENCH round=1 module=unloaded accept_per_s=100.0 getpeername_toa_per_s=1000.0 getpeername_plain_per_s=1000.0 toa_setup_per_s=50.0
TOA-LAB BENCH round=1 module=loaded accept_per_s=99.0 getpeername_toa_per_s=600.0 getpeername_plain_per_s=900.0 toa_setup_per_s=49.0
TOA-LAB BENCH round=2 module=loaded accept_per_s=97.0 getpeername_toa_per_s=620.0 getpeername_plain_per_s=910.0 toa_setup_per_s=48.0
TOA-LAB BENCH round=2 module=unloaded accept_per_s=102.0 getpeername_toa_per_s=1010.0 getpeername_plain_per_s=1005.0 toa_setup_per_s=51.0
[   12.3] some kernel line
TOA-LAB BENCH allocs_per_v4_toa=1.00
TOA-LAB RESULT bench PASS 2 rounds
";

    #[test]
    fn medians_and_ratios_per_figure() {
        let (figures, allocs) = aggregate(CONSOLE).unwrap();
        assert_eq!(allocs, Some(1.0));
        let accept = figures.iter().find(|f| f.name == "accept_per_s").unwrap();
        assert_eq!(accept.unloaded_median, 101.0);
        assert_eq!(accept.loaded_median, 98.0);
        assert!((accept.ratio - 98.0 / 101.0).abs() < 1e-9);
        assert_eq!(figures.len(), FIGURES.len());
    }

    #[test]
    fn each_ebpf_state_gets_its_own_ratio() {
        let with_bpf = format!(
            "{CONSOLE}\nTOA-LAB BENCH round=1 module=bpf capture=fexit accept_per_s=100.0 getpeername_toa_per_s=800.0 getpeername_plain_per_s=850.0 toa_setup_per_s=50.0\n\
             TOA-LAB BENCH round=1 module=bpf-sock-ops capture=sock-ops accept_per_s=98.0 getpeername_toa_per_s=790.0 getpeername_plain_per_s=850.0 toa_setup_per_s=50.0\n\
             TOA-LAB BENCH round=1 module=bpf-scoped-out capture=fexit accept_per_s=99.0 getpeername_toa_per_s=1004.0 getpeername_plain_per_s=1003.0 toa_setup_per_s=50.0\n\
             TOA-LAB BENCH round=1 module=bpf-scoped-in capture=fexit accept_per_s=97.0 getpeername_toa_per_s=780.0 getpeername_plain_per_s=840.0 toa_setup_per_s=50.0\n\
             TOA-LAB BENCH round=1 module=noop-scoped-out accept_per_s=99.0 getpeername_toa_per_s=1001.0 getpeername_plain_per_s=1002.0 toa_setup_per_s=50.0\n"
        );
        let (figures, _) = aggregate(&with_bpf).unwrap();
        let toa = figures
            .iter()
            .find(|f| f.name == "getpeername_toa_per_s")
            .unwrap();
        let bpf = toa.bpf.as_ref().unwrap();
        assert_eq!(bpf.median, 800.0);
        assert_eq!(bpf.ratio, 800.0 / 1005.0);
        let accept = figures.iter().find(|f| f.name == "accept_per_s").unwrap();
        assert_eq!(accept.bpf_sock_ops.as_ref().unwrap().ratio, 98.0 / 101.0);
        let plain = figures
            .iter()
            .find(|f| f.name == "getpeername_plain_per_s")
            .unwrap();
        assert_eq!(plain.bpf_scoped_out.as_ref().unwrap().median, 1003.0);
        assert_eq!(plain.bpf_scoped_in.as_ref().unwrap().ratio, 840.0 / 1002.5);
        assert_eq!(plain.noop_scoped_out.as_ref().unwrap().median, 1002.0);
        assert_eq!(bpf_capture(&with_bpf).as_deref(), Some("fexit"));
        let (plain, _) = aggregate(CONSOLE).unwrap();
        assert!(plain
            .iter()
            .all(|f| f.bpf.is_none() && f.bpf_sock_ops.is_none()));
        assert_eq!(bpf_capture(CONSOLE), None);
    }

    #[test]
    fn a_missing_state_is_an_error() {
        let only_loaded: String = CONSOLE
            .lines()
            .filter(|l| !l.contains("unloaded"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = aggregate(&only_loaded).unwrap_err().to_string();
        assert!(err.contains("both states"), "{err}");
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
