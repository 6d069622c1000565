//! A small static program for the VM lab guest: loads and unloads the eBPF
//! mode through the library, as the operator CLI does.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load or unload toa's eBPF mode (test program for the VM lab)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the programs at the cgroup v2 root, or update the settings of loaded ones.
    Load {
        /// Trusted proxies, toa.ko's syntax: 10.0.0.0/8,fd00::/64 (empty: any source).
        #[arg(long, default_value = "")]
        trusted_proxies: String,
        /// Enabled TOA formats, toa.ko's bitmask (decimal or 0x-hex).
        #[arg(long, default_value = "0xf", value_parser = parse_mask)]
        formats: u32,
        /// Listener ports that honour TOA: 80,8000-8099 (empty: every port).
        #[arg(long, default_value = "")]
        ports: String,
    },
    /// Remove every pin: the programs detach.
    Unload,
    /// Print the settings and the counters summed over CPUs.
    Status,
}

fn parse_mask(text: &str) -> Result<u32, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("{text:?} is not a number"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Load {
            trusted_proxies,
            formats,
            ports,
        } => {
            let settings = toa_bpf::Settings::parse(&trusted_proxies, formats, &ports)?;
            let done = toa_bpf::load(&settings)?;
            println!(
                "toa-bpf: {done:?} (formats {formats:#x}, trusted [{}], ports [{}])",
                settings.trusted_text(),
                settings.ports_text()
            );
        }
        Command::Unload => {
            let was = toa_bpf::unload()?;
            println!(
                "toa-bpf: {}",
                if was { "unloaded" } else { "was not loaded" }
            );
        }
        Command::Status => match toa_bpf::status()? {
            None => println!("toa-bpf: not loaded"),
            Some(s) => {
                println!(
                    "formats {:#x} trusted [{}] ports [{}]",
                    s.settings.formats,
                    s.settings.trusted_text(),
                    s.settings.ports_text()
                );
                for (name, value) in s.counters {
                    println!("{name}: {value}");
                }
            }
        },
    }
    Ok(())
}
