//! `cargo xtask fuzz`: coverage-guided fuzzing of the Rust core with libFuzzer.
//!
//! The target (`toa-kmod/fuzz`) calls the C ABI the kernel glue calls, with the
//! checks of `toa-kmod/fuzz/src/check.rs`. It is built here rather than by
//! cargo-fuzz because only the sanitizer-coverage codegen flags are needed and
//! they are stable rustc options; `--target` keeps them off build scripts.
//! The corpus grows under the cache (a later run resumes from it); a finding
//! is written to `toa-kmod/fuzz/regressions/`, which plain `cargo test`
//! replays (`toa-kmod/tests/fuzz_regressions.rs`), so it is committed with its fix.

use crate::host::needs::Needs;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Instant;

/// What the test command spends on fuzzing.
pub const SMOKE_SECONDS: u64 = 20;

const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";
/// Longest input: the rewrite case needs 44 bytes of header and a 64-byte buffer.
const MAX_LEN: &str = "160";

#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz, in seconds (the test command runs 20).
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Start from the committed seeds only, not the cached corpus.
    #[arg(long)]
    pub fresh: bool,
}

impl Args {
    /// cargo-fuzz's targets come from rust-toolchain.toml.
    pub fn needs(&self) -> Result<Needs> {
        Ok(Needs::new("fuzz").rust())
    }
}

pub fn run(args: Args) -> Result<()> {
    let report = fuzz(args.seconds, args.fresh)?;
    println!("{report}");
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    crate::host::cache::project_root()
        .join("toa-kmod")
        .join("fuzz")
}

/// Builds the target, fuzzes for `seconds`, and returns a one-line summary;
/// fails naming the kept input if libFuzzer found one.
pub fn fuzz(seconds: u64, fresh: bool) -> Result<String> {
    let root = crate::host::cache::project_root();
    let target_dir = crate::host::cache::target_dir().join("fuzz");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("    building the fuzz target with sanitizer coverage");
    duct::cmd!(
        cargo,
        "build",
        "--release",
        "--quiet",
        "--manifest-path",
        fuzz_dir().join("Cargo.toml"),
        "--target",
        HOST_TARGET,
        "--target-dir",
        &target_dir
    )
    .env("RUSTFLAGS", RUSTFLAGS)
    .dir(&root)
    .run()
    .context("building toa-kmod/fuzz (libfuzzer-sys compiles libFuzzer with the C++ compiler)")?;
    let bin = target_dir
        .join(HOST_TARGET)
        .join("release")
        .join("toa_core");

    let corpus = crate::host::cache::cache_dir().join("fuzz-corpus");
    if fresh && corpus.exists() {
        std::fs::remove_dir_all(&corpus)
            .with_context(|| format!("clearing {}", corpus.display()))?;
    }
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let regressions = fuzz_dir().join("regressions");
    std::fs::create_dir_all(&regressions)?;
    let before = findings(&regressions)?;

    eprintln!(
        "    fuzzing for {seconds} s (corpus {}, seeds toa-kmod/fuzz/seeds)",
        corpus.display()
    );
    let started = Instant::now();
    let out = duct::cmd!(
        &bin,
        format!("-max_total_time={seconds}"),
        format!("-max_len={MAX_LEN}"),
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        format!("-artifact_prefix={}/", regressions.display()),
        &corpus,
        fuzz_dir().join("seeds")
    )
    .dir(&root)
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .with_context(|| format!("running {}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stdout);
    let new: Vec<PathBuf> = findings(&regressions)?
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if !out.status.success() || !new.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "libFuzzer found a failing input ({}): it is kept as {}; fix the core, then commit the \
             file with the fix (`cargo test -p toa-kmod --test fuzz_regressions` replays it)\n{}",
            out.status,
            new.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            tail.join("\n")
        );
    }
    let runs = stat(&log, "stat::number_of_executed_units").unwrap_or(0);
    let inputs = std::fs::read_dir(&corpus)?.count();
    Ok(format!(
        "fuzz: {runs} inputs in {:.0} s, corpus {inputs} entries, no finding",
        started.elapsed().as_secs_f64()
    ))
}

/// Files libFuzzer wrote as findings (crash-, leak-, timeout-, oom-).
fn findings(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            out.push(path);
        }
    }
    Ok(out)
}

/// A `-print_final_stats` figure, e.g. `stat::number_of_executed_units: 123`.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        l.trim()
            .strip_prefix(name)?
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read() {
        let log = "#2 INITED\nstat::number_of_executed_units: 15637420\nstat::peak_rss_mb: 41\n";
        assert_eq!(
            stat(log, "stat::number_of_executed_units"),
            Some(15_637_420)
        );
        assert_eq!(stat(log, "stat::slowest_unit_time_sec"), None);
    }
}
