//! toa: the operator's command for toa on an origin server.
//!
//! `main` parses and dispatches; one module per subcommand, each an `Args`
//! struct with a `run` that returns the exit status.

mod bpf;
mod counters;
mod health;
mod host;
mod kmod;
mod mode;
mod selftest;
mod stats;
mod status;
mod stop_signal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What the operator of an origin server behind an L4 proxy needs to know
/// about toa: whether it is active, whether it is healthy, and whether this
/// kernel really shows applications the client behind the proxy.
///
/// toa makes accept() and getpeername() return the real client address that
/// the proxy wrote into a TCP option (TOA), instead of the proxy's own.
///
/// Exit status: 0 healthy / every check passed, 1 unhealthy / a check
/// failed / an error, 2 a command line that cannot be acted on.
#[derive(Parser, Debug)]
#[command(name = "toa", version, about, long_about)]
struct Cli {
    /// Read /proc, /sys and /lib/modules under this directory instead of
    /// `/` (a copy of another machine's files; tests).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/",
        hide = true
    )]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Status(status::Args),
    Stats(stats::Args),
    Selftest(selftest::Args),
    Bpf(bpf::Args),
}

/// Exit status of a run whose answer is "not healthy", "a check failed", or
/// that could not be carried out.
const EXIT_UNHEALTHY: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = host::Host::new(cli.root);
    let outcome = match cli.command {
        Command::Status(args) => status::run(&host, &args),
        Command::Stats(args) => stats::run(&host, &args),
        Command::Selftest(args) => selftest::run(&host, &args),
        Command::Bpf(args) => bpf::run(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("toa: {e:#}");
            ExitCode::from(EXIT_UNHEALTHY)
        }
    }
}
