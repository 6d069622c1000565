//! The scenarios, in the order they run, and the loop that reports them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{lab_err, Context, Result};
use crate::lab::{peer_of, ConnSpec, Expect, Held, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::output;
use crate::sockaddr::PeerName;
use crate::stats::{self, Snapshot};
use crate::system;
use crate::toa_option::{Toa, KIND_TOA, KIND_TOA_TENCENT, KIND_TOA_V6_ALIBABA};

/// Name under which `rmmod` knows the module.
const MODULE_NAME: &str = "toa";
const NO_TOA_AFTER_TOA_ROUNDS: u16 = 20;
/// Socket destruction (which frees IPv6 client records) may trail close().
const STATS_SETTLE: Duration = Duration::from_secs(2);

pub struct Options {
    pub expect: Expect,
    /// toa.ko to insmod again in the reload scenario.
    pub module: Option<PathBuf>,
    /// NAME=VALUE arguments for that insmod, as the first load had them.
    pub module_params: Vec<String>,
    pub step_timeout: Duration,
    /// Run only these scenarios (debugging aid); `None` runs all.
    pub only: Option<Vec<String>>,
    /// Log every TCP segment on the TUN device to stderr.
    pub trace: bool,
}

/// State scenarios share beyond the lab itself.
struct Shared {
    module: Option<PathBuf>,
    module_params: Vec<String>,
    /// /proc/net/toa_stats before the first scenario ran.
    stats_before: Option<std::result::Result<Snapshot, String>>,
    /// Set by the stats scenario for the STATS line.
    stats_after: Option<Snapshot>,
}

type Run = fn(&Lab, &mut Shared) -> Result<String>;

struct Scenario {
    name: &'static str,
    /// Meaningless without the module (stats, reload).
    module_only: bool,
    run: Run,
}

fn toa(kind: u8, client: &str) -> Option<Toa> {
    Some(Toa::new(
        kind,
        client.parse().expect("scenario addresses are valid"),
    ))
}

pub const ALL: &[&str] = &[
    "v4-254-8",
    "v6-254-20",
    "v6-253-20",
    "v4-on-v6-listener",
    "v6-on-v4-listener",
    "tencent-200-8",
    "no-toa-v4",
    "no-toa-v6",
    "no-toa-after-toa",
    "stats",
    "reload",
];

fn scenarios() -> Vec<Scenario> {
    use Listener as L;
    use ProxyFamily as P;
    vec![
        Scenario {
            name: "v4-254-8",
            module_only: false,
            run: |lab, _| {
                lab.exercise(&ConnSpec::new(
                    P::V4,
                    L::V4,
                    toa(KIND_TOA, "198.51.100.7:40001"),
                ))
            },
        },
        Scenario {
            name: "v6-254-20",
            module_only: false,
            run: |lab, _| {
                lab.exercise(&ConnSpec::new(
                    P::V6,
                    L::V6,
                    toa(KIND_TOA, "[2001:db8::7]:40002"),
                ))
            },
        },
        Scenario {
            name: "v6-253-20",
            module_only: false,
            run: |lab, _| {
                lab.exercise(&ConnSpec::new(
                    P::V6,
                    L::V6,
                    toa(KIND_TOA_V6_ALIBABA, "[2001:db8::7]:40002"),
                ))
            },
        },
        Scenario {
            name: "v4-on-v6-listener",
            module_only: false,
            run: |lab, _| {
                lab.exercise(&ConnSpec::new(
                    P::V4,
                    L::V6,
                    toa(KIND_TOA, "198.51.100.7:40003"),
                ))
            },
        },
        Scenario {
            name: "v6-on-v4-listener",
            module_only: false,
            run: |lab, _| {
                lab.exercise(&ConnSpec::new(
                    P::V4,
                    L::V4,
                    toa(KIND_TOA, "[2001:db8::9]:40004"),
                ))
            },
        },
        Scenario {
            name: "tencent-200-8",
            module_only: false,
            run: |lab, _| {
                lab.exercise(&ConnSpec::new(
                    P::V4,
                    L::V4,
                    toa(KIND_TOA_TENCENT, "203.0.113.5:40005"),
                ))
            },
        },
        Scenario {
            name: "no-toa-v4",
            module_only: false,
            run: |lab, _| lab.exercise(&ConnSpec::new(P::V4, L::V4, None)),
        },
        Scenario {
            name: "no-toa-v6",
            module_only: false,
            run: |lab, _| lab.exercise(&ConnSpec::new(P::V6, L::V6, None)),
        },
        Scenario {
            name: "no-toa-after-toa",
            module_only: false,
            run: |lab, _| no_toa_after_toa(lab),
        },
        Scenario {
            name: "stats",
            module_only: true,
            run: check_stats,
        },
        Scenario {
            name: "reload",
            module_only: true,
            run: reload,
        },
    ]
}

/// A socket freed by a TOA connection is soon reused by the next connection
/// of the same family; a record not removed on destroy would show up there.
/// The TOA side cycles through the shapes that keep a record (IPv4, IPv6,
/// IPv6 on an AF_INET listener), each followed by a no-TOA connection to the
/// same listener from the same proxy family, so the same slab is reused.
fn no_toa_after_toa(lab: &Lab) -> Result<String> {
    use Listener as L;
    use ProxyFamily as P;
    for round in 1..=NO_TOA_AFTER_TOA_ROUNDS {
        let port = 41000 + round;
        let (proxy, listener, client) = match round % 3 {
            0 => (P::V4, L::V4, format!("198.51.100.7:{port}")),
            1 => (P::V6, L::V6, format!("[2001:db8::7]:{port}")),
            _ => (P::V4, L::V4, format!("[2001:db8::9]:{port}")),
        };
        lab.exercise(&ConnSpec::new(proxy, listener, toa(KIND_TOA, &client)))
            .context(format!("round {round}, TOA connection ({client})"))?;
        lab.exercise(&ConnSpec::new(proxy, listener, None))
            .context(format!(
                "round {round}, no-TOA connection right after the TOA one ({client})"
            ))?;
    }
    Ok(format!(
        "{NO_TOA_AFTER_TOA_ROUNDS} rounds: each no-TOA connection right after a closed TOA connection showed the proxy"
    ))
}

fn check_stats(lab: &Lab, ctx: &mut Shared) -> Result<String> {
    let before = match ctx.stats_before.clone() {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(lab_err!("before the scenarios: {e}")),
        None => return Err(lab_err!("no snapshot was taken before the scenarios")),
    };
    let ledger = lab.ledger();
    let deadline = Instant::now() + STATS_SETTLE;
    let after = loop {
        let after = stats::read()?;
        if stats::ip6_balanced(&before, &after) || Instant::now() >= deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ctx.stats_after = Some(after.clone());
    stats::check(&before, &after, &ledger).map_err(|wrong| {
        lab_err!("{wrong} (scenarios did {ledger:?}; after waiting up to {STATS_SETTLE:?} for ip6 frees)")
    })
}

/// Unloading with a TOA connection open must be safe and hand that socket
/// back to the kernel's own answers; loading again must work at once.
fn reload(lab: &Lab, ctx: &mut Shared) -> Result<String> {
    let module = ctx
        .module
        .clone()
        .ok_or_else(|| lab_err!("no --module path to load again after rmmod"))?;
    let kept = ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        toa(KIND_TOA, "198.51.100.7:40006"),
    );
    lab.origin.set_hold(true);
    let opened = lab.open(&kept);
    lab.origin.set_hold(false);
    let Held { client, mut report } =
        opened.context("opening the connection kept across the reload")?;
    let proxy_src = client.local();
    let fd = report.held.take();

    let outcome = (|| {
        let fd = fd
            .as_ref()
            .ok_or_else(|| lab_err!("the origin did not keep the socket open"))?;
        lab.verify(&kept, proxy_src, &report)
            .context("kept connection before rmmod")?;
        system::run("rmmod", &[MODULE_NAME])?;
        let seen = peer_of(fd).context("getpeername on the kept connection after rmmod");
        // Load again whatever getpeername said, so the guest is left with
        // the module it started with.
        let path = module.to_string_lossy();
        let insmod_args: Vec<&str> = std::iter::once(path.as_ref())
            .chain(ctx.module_params.iter().map(String::as_str))
            .collect();
        system::run("insmod", &insmod_args)?;
        let seen = seen?;
        let want = PeerName::v4(proxy_src);
        if seen != want {
            return Err(lab_err!(
                "after rmmod, getpeername on the kept connection: expected the kernel's [{want}], saw [{seen}]"
            ));
        }
        let fresh = ConnSpec::new(
            ProxyFamily::V4,
            Listener::V4,
            toa(KIND_TOA, "198.51.100.7:40007"),
        );
        let detail = lab
            .exercise(&fresh)
            .context("new connection after insmod")?;
        Ok(format!(
            "kept connection showed [{want}] after rmmod; new connection after insmod: {detail}"
        ))
    })();

    drop(fd);
    let closed = client
        .close()
        .context("closing the connection kept across the reload");
    let detail = outcome?;
    closed?;
    Ok(detail)
}

/// Runs every selected scenario and prints the console lines; the return
/// value is the process exit status.
pub fn run(opts: Options) -> i32 {
    let mode = match opts.expect {
        Expect::Module => "module",
        Expect::Kernel => "kernel",
    };
    output::start(mode, &kernel_release());

    let lab = match Lab::setup(opts.expect, opts.step_timeout, opts.trace) {
        Ok(lab) => lab,
        Err(e) => {
            output::result("setup", &Err(e.to_string()));
            output::done(0, 1);
            return 1;
        }
    };
    let mut ctx = Shared {
        module: opts.module,
        module_params: opts.module_params,
        stats_before: (opts.expect == Expect::Module)
            .then(|| stats::read().map_err(|e| e.to_string())),
        stats_after: None,
    };

    let (mut pass, mut fail) = (0, 0);
    for scenario in scenarios() {
        if let Some(only) = &opts.only {
            if !only.iter().any(|n| n == scenario.name) {
                continue;
            }
        }
        if scenario.module_only && opts.expect == Expect::Kernel {
            output::skip(scenario.name, "needs the module (--expect kernel)");
            continue;
        }
        let outcome = (scenario.run)(&lab, &mut ctx).map_err(|e| e.to_string());
        if outcome.is_ok() {
            pass += 1;
        } else {
            fail += 1;
            // Let the origin finish whatever the failure left half done, so
            // its late report is not taken for the next scenario's.
            lab.origin.settle(opts.step_timeout * 2);
        }
        output::result(scenario.name, &outcome);
        if let Some(after) = ctx.stats_after.take() {
            output::stats(&after);
        }
    }
    let Lab { origin, .. } = lab;
    origin.shutdown();
    output::done(pass, fail);
    i32::from(fail > 0)
}

fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed struct with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_scenario_names_match_the_published_list() {
        let names: Vec<&str> = scenarios().iter().map(|s| s.name).collect();
        assert_eq!(names, ALL);
    }

    #[test]
    fn test_reload_runs_last_and_stats_before_it() {
        let list = scenarios();
        assert_eq!(list.last().map(|s| s.name), Some("reload"));
        assert_eq!(list[list.len() - 2].name, "stats");
        let module_only: Vec<&str> = list
            .iter()
            .filter(|s| s.module_only)
            .map(|s| s.name)
            .collect();
        assert_eq!(module_only, ["stats", "reload"]);
    }
}
