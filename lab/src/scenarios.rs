//! The scenarios, in the order they run, and the loop that reports them.

mod accept_at_load;
mod bpf;
mod chained;
mod handshake_unload;
mod ia32;
mod kernel_socket;
mod ktls;
mod lab_hooks;
mod listen_at_load;
mod listen_race;
mod lock_wait;
mod loopback;
mod malformed;
mod param_race;
mod params;
mod ports;
mod relisten;
mod storm;
mod syn_cookies;
mod trusted;

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{lab_err, Context, Result};
use crate::lab::{peer_of, ConnSpec, Expect, Held, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::output;
use crate::sockaddr::PeerName;
use crate::stats::{self, Snapshot};
use crate::system;
use crate::toa_option::{Toa, KIND_TOA, KIND_TOA_TENCENT, KIND_TOA_V6_ALIBABA};
use crate::trust::Trusted;

/// Name under which `rmmod` knows the module.
pub const MODULE_NAME: &str = "toa";
const NO_TOA_AFTER_TOA_ROUNDS: u16 = 20;
/// Socket destruction (which frees IPv6 client records) may trail close().
pub const STATS_SETTLE: Duration = Duration::from_secs(2);
/// Malformed-option connections in a default run.
pub const DEFAULT_FUZZ_CONNECTIONS: u64 = 200;

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
    /// Connections of the malformed-options scenario.
    pub fuzz_connections: u64,
    /// Seed of its generator (a fresh one when not given).
    pub fuzz_seed: Option<u64>,
    /// The operator's `toa` command: the eBPF-only scenarios run `toa bpf load|unload`.
    pub loader: PathBuf,
}

/// State scenarios share beyond the lab itself.
struct Shared {
    module: Option<PathBuf>,
    module_params: Vec<String>,
    /// /proc/net/toa_stats before the first scenario ran.
    stats_before: Option<std::result::Result<Snapshot, String>>,
    /// Set by the stats scenario for the STATS line.
    stats_after: Option<Snapshot>,
    fuzz_connections: u64,
    fuzz_seed: u64,
}

impl Shared {
    /// The value of module parameter `name` at the first load, if given.
    fn param(&self, name: &str) -> Option<&str> {
        self.module_params
            .iter()
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    }
}

/// Runs `f` and checks that the counters moved exactly as the connections
/// it made imply (module mode only).
fn counted(lab: &Lab, f: impl FnOnce() -> Result<String>) -> Result<String> {
    if lab.expect != Expect::Module {
        return f();
    }
    // Records of connections closed by earlier scenarios may still be on
    // their way out: start from a quiet module, or their frees land here.
    let before = quiet_stats().context("counters before")?;
    let booked = lab.ledger();
    let detail = f()?;
    let did = lab.ledger().since(&booked);
    let after = settled_stats(&before)?;
    let counted = stats::check(&before, &after, &did)
        .map_err(|wrong| lab_err!("counters: {wrong} (connections did {did:?})"))?;
    Ok(format!("{detail}; counters {counted}"))
}

/// Reads the counters once every IPv6 record ever made is freed (no
/// connection is open between scenarios), or `STATS_SETTLE` has passed.
fn quiet_stats() -> Result<Snapshot> {
    stats::read_until(STATS_SETTLE, |s| {
        s.get("ip6_address_alloc") == s.get("ip6_address_free")
    })
}

/// Reads the counters once IPv6 records made since `before` are all freed
/// (or `STATS_SETTLE` has passed).
fn settled_stats(before: &Snapshot) -> Result<Snapshot> {
    stats::read_until(STATS_SETTLE, |after| stats::ip6_balanced(before, after))
}

type Run = fn(&Lab, &mut Shared) -> Result<String>;

struct Scenario {
    name: &'static str,
    /// Meaningless without the module (stats, reload).
    module_only: bool,
    /// Leaves the module loaded until reboot: runs only when `--only` names
    /// it, so a full run stays unloadable for what the guest does after it.
    pins_module: bool,
    run: Run,
}

fn toa(kind: u8, client: &str) -> Option<Toa> {
    Some(Toa::new(
        kind,
        client.parse().expect("scenario addresses are valid"),
    ))
}

pub use bpf::loader as toa_command;

/// Every scenario's name, in the order they run (the eBPF-only ones last).
pub fn names() -> Vec<&'static str> {
    let table = scenarios().into_iter().map(|s| s.name);
    table.chain(bpf::SCENARIOS.map(|(name, _)| name)).collect()
}

fn scenarios() -> Vec<Scenario> {
    use Listener as L;
    use ProxyFamily as P;
    vec![
        Scenario {
            name: "v4-254-8",
            module_only: false,
            pins_module: false,
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
            pins_module: false,
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
            pins_module: false,
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
            pins_module: false,
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
            pins_module: false,
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
            pins_module: false,
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
            pins_module: false,
            run: |lab, _| lab.exercise(&ConnSpec::new(P::V4, L::V4, None)),
        },
        Scenario {
            name: "no-toa-v6",
            module_only: false,
            pins_module: false,
            run: |lab, _| lab.exercise(&ConnSpec::new(P::V6, L::V6, None)),
        },
        Scenario {
            name: "no-toa-after-toa",
            module_only: false,
            pins_module: false,
            run: |lab, _| no_toa_after_toa(lab),
        },
        Scenario {
            name: "syn-cookies",
            module_only: false,
            pins_module: false,
            run: |lab, _| counted(lab, || syn_cookies::run(lab)),
        },
        Scenario {
            name: "trusted-proxies",
            module_only: true,
            pins_module: false,
            run: |lab, _| counted(lab, || trusted::runtime(lab)),
        },
        Scenario {
            name: "ports",
            module_only: true,
            pins_module: false,
            run: |lab, _| counted(lab, || ports::runtime(lab)),
        },
        Scenario {
            name: "getpeername-storm",
            module_only: false,
            pins_module: false,
            run: |lab, _| counted(lab, || storm::run(lab)),
        },
        Scenario {
            name: "kernel-socket",
            module_only: true,
            pins_module: false,
            run: |lab, _| kernel_socket::run(lab),
        },
        Scenario {
            name: "malformed-options",
            module_only: false,
            pins_module: false,
            run: |lab, ctx| {
                let (n, seed) = (ctx.fuzz_connections, ctx.fuzz_seed);
                counted(lab, || malformed::run(lab, n, seed))
            },
        },
        Scenario {
            name: "stats",
            module_only: true,
            pins_module: false,
            run: check_stats,
        },
        Scenario {
            name: "reload",
            module_only: true,
            pins_module: false,
            run: reload,
        },
        Scenario {
            name: "trusted-proxies-insmod",
            module_only: true,
            pins_module: false,
            run: |lab, ctx| trusted::at_load(lab, ctx),
        },
        Scenario {
            name: "relisten-accepted",
            module_only: true,
            pins_module: false,
            run: |lab, ctx| relisten::run(lab, ctx),
        },
        Scenario {
            name: "listen-before-load",
            module_only: true,
            pins_module: false,
            run: |lab, ctx| listen_at_load::run(lab, ctx),
        },
        Scenario {
            name: "listen-connect-race",
            module_only: true,
            pins_module: false,
            run: |lab, _| listen_race::run(lab),
        },
        Scenario {
            name: lock_wait::NAME,
            module_only: true,
            pins_module: false,
            run: |lab, ctx| lock_wait::run(lab, ctx),
        },
        Scenario {
            name: accept_at_load::NAME,
            module_only: true,
            pins_module: false,
            run: |lab, ctx| accept_at_load::run(lab, ctx),
        },
        Scenario {
            name: param_race::NAME,
            module_only: true,
            pins_module: false,
            run: |lab, ctx| param_race::run(lab, ctx),
        },
        Scenario {
            name: chained::NAME,
            module_only: true,
            pins_module: false,
            run: |lab, ctx| chained::run(lab, ctx),
        },
        Scenario {
            name: handshake_unload::NAME,
            module_only: true,
            pins_module: false,
            run: |lab, ctx| handshake_unload::run(lab, ctx),
        },
        Scenario {
            name: ia32::NAME,
            module_only: true,
            pins_module: false,
            run: |lab, _| ia32::run(lab),
        },
        Scenario {
            name: ktls::NAME,
            module_only: true,
            pins_module: true,
            run: |lab, _| ktls::run(lab),
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
    let after = settled_stats(&before)?;
    ctx.stats_after = Some(after.clone());
    stats::check(&before, &after, &ledger).map_err(|wrong| {
        lab_err!("{wrong} (scenarios did {ledger:?}; after waiting up to {STATS_SETTLE:?} for ip6 frees)")
    })
}

/// A TOA connection the origin keeps open across what a scenario does next.
struct Kept<'l> {
    client: crate::tcp_client::TcpClient<'l>,
    /// The origin's socket.
    fd: std::os::fd::OwnedFd,
    /// The proxy's end: what the kernel's own answer shows.
    proxy_src: std::net::SocketAddr,
}

/// Opens `spec` with the origin keeping its socket and checks what it showed
/// before `across` (a failed check closes the connection).
fn open_kept<'l>(lab: &'l Lab, spec: &ConnSpec, across: &str) -> Result<Kept<'l>> {
    lab.origin.set_hold(true);
    let opened = lab.open(spec);
    lab.origin.set_hold(false);
    let Held {
        client,
        mut report,
        verdict,
    } = opened.context(format!("opening the connection kept across {across}"))?;
    let proxy_src = client.local();
    let checked = report
        .held
        .take()
        .ok_or_else(|| lab_err!("the origin did not keep the socket open"))
        .and_then(|fd| {
            lab.verify(spec, verdict, proxy_src, &report)
                .context(format!("kept connection before {across}"))?;
            Ok(fd)
        });
    match checked {
        Ok(fd) => Ok(Kept {
            client,
            fd,
            proxy_src,
        }),
        Err(e) => {
            let _ = client.close();
            Err(e)
        }
    }
}

/// rmmod toa; the lab's model follows.
fn rmmod(lab: &Lab) -> Result<()> {
    system::run("rmmod", &[MODULE_NAME])?;
    lab.set_module_loaded(false);
    Ok(())
}

/// Loads the module with the first load's parameters unless it is loaded;
/// the origin's listeners are left as they are.
fn load_again(lab: &Lab, ctx: &Shared) -> Result<()> {
    if !system::module_loaded(MODULE_NAME) {
        let module = ctx
            .module
            .as_ref()
            .ok_or_else(|| lab_err!("no --module path to load again after rmmod"))?;
        system::insmod(module, &ctx.module_params)?;
    }
    lab.set_module_loaded(true);
    Ok(())
}

/// Runs `attack`, then, whatever it did, leaves the guest as the run began
/// (the module loaded, the origin's listeners taken over by it) and fails
/// on anything alarming the kernel logged meanwhile. Returns the attack's
/// detail and the kernel's lines.
fn attack_then_restore(
    lab: &Lab,
    ctx: &Shared,
    attack: impl FnOnce(&Lab) -> Result<String>,
) -> Result<(String, Vec<String>)> {
    let mut log = crate::kmsg::Cursor::at_end()?;
    let outcome = attack(lab);
    let restored = load_again(lab, ctx)
        .and_then(|()| lab.origin.relisten(lab.step_timeout))
        .context("loading the module again");
    // Socket destruction runs from softirq after close(): what it logs must
    // be in the kernel log before it is read.
    std::thread::sleep(Duration::from_millis(300));
    let said = log.read_new()?;
    let detail = quiet_kernel(&said, outcome)?;
    restored?;
    Ok((detail, said))
}

/// `outcome`, unless the kernel logged a warning, BUG or oops in `said`:
/// that is the failure to name first.
fn quiet_kernel(said: &[String], outcome: Result<String>) -> Result<String> {
    let Some(line) = crate::kmsg::first_alarm(said) else {
        return outcome;
    };
    let also = match &outcome {
        Ok(_) => String::new(),
        Err(e) => format!(" (and the scenario failed: {e})"),
    };
    Err(lab_err!("the kernel logged [{line}]{also}"))
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
    let Kept {
        client,
        fd,
        proxy_src,
    } = open_kept(lab, &kept, "rmmod")?;

    let outcome = (|| {
        system::run("rmmod", &[MODULE_NAME])?;
        let seen = peer_of(&fd).context("getpeername on the kept connection after rmmod");
        // Load again whatever getpeername said, so the guest is left with
        // the module it started with.
        system::insmod(&module, &ctx.module_params)?;
        // Listeners that predate the module keep the kernel's answer: the
        // origin restarts them, as an operator restarts a service.
        lab.origin.relisten(lab.step_timeout)?;
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
        Expect::Bpf => "bpf",
    };
    output::start(mode, &kernel_release());

    let mut ctx = Shared {
        module: opts.module,
        module_params: opts.module_params,
        stats_before: None,
        stats_after: None,
        fuzz_connections: opts.fuzz_connections,
        fuzz_seed: opts.fuzz_seed.unwrap_or_else(crate::rng::fresh_seed),
    };
    let lab = Lab::setup(opts.expect, opts.step_timeout, opts.trace).and_then(|mut lab| {
        // The first load's parameters shape what the module does.
        if let Some(list) = ctx.param("trusted_proxies") {
            lab.set_trusted_model(Trusted::parse(list)?);
        }
        if let Some(f) = ctx.param("formats") {
            lab.formats = parse_number(f).ok_or_else(|| lab_err!("formats={f} is not a number"))?;
        }
        Ok(lab)
    });
    let lab = match lab {
        Ok(lab) => lab,
        Err(e) => {
            output::result("setup", &Err(e.to_string()));
            output::done(0, 1);
            return 1;
        }
    };
    ctx.stats_before =
        (opts.expect == Expect::Module).then(|| stats::read().map_err(|e| e.to_string()));

    let (mut pass, mut fail) = (0, 0);
    for scenario in scenarios() {
        if let Some(only) = &opts.only {
            if !only.iter().any(|n| n == scenario.name) {
                continue;
            }
        }
        if scenario.module_only && opts.expect != Expect::Module {
            output::skip(scenario.name, "needs the module");
            continue;
        }
        if scenario.pins_module && opts.only.is_none() {
            output::skip(
                scenario.name,
                "leaves toa.ko loaded until reboot: runs alone, with --only",
            );
            continue;
        }
        if let Some(why) = not_offered(scenario.name) {
            output::not_offered(scenario.name, &why);
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
    if opts.expect == Expect::Bpf {
        for (name, run) in bpf::SCENARIOS {
            if opts
                .only
                .as_ref()
                .is_some_and(|o| !o.iter().any(|n| n == name))
            {
                continue;
            }
            let outcome = run(&lab, &opts.loader).map_err(|e| e.to_string());
            if outcome.is_ok() {
                pass += 1;
            } else {
                fail += 1;
                lab.origin.settle(opts.step_timeout * 2);
            }
            output::result(name, &outcome);
        }
    }
    let Lab { origin, .. } = lab;
    origin.shutdown();
    output::done(pass, fail);
    i32::from(fail > 0)
}

/// Why this kernel cannot run scenario `name`, for those that need more than
/// toa.ko and TCP (the module-only scenarios run everywhere from 3.10 on).
/// Probed, not read off the version: EL kernels backport features.
fn not_offered(name: &str) -> Option<String> {
    match name {
        lock_wait::NAME => lock_wait::not_offered(),
        ktls::NAME => ktls::not_offered(),
        _ => None,
    }
}

/// Decimal or 0x-hexadecimal, as kstrtouint(…, 0) reads module parameters.
fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

pub fn kernel_release() -> String {
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
    fn test_names_are_unique_and_end_with_the_ebpf_ones() {
        let all = names();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "{all:?}");
        assert_eq!(
            all[all.len() - bpf::SCENARIOS.len()..],
            [
                "bpf-trusted-proxies",
                "bpf-ports",
                "bpf-kernel-socket",
                "bpf-upgrade",
                "bpf-unload-open"
            ]
        );
    }

    #[test]
    fn test_reloading_scenarios_run_after_stats() {
        // rmmod resets the counters: whatever reloads must come after the
        // stats check of everything before it.
        let list = scenarios();
        let names: Vec<&str> = list.iter().map(|s| s.name).collect();
        let stats = names.iter().position(|n| *n == "stats").unwrap();
        assert_eq!(
            &names[stats + 1..],
            [
                "reload",
                "trusted-proxies-insmod",
                "relisten-accepted",
                "listen-before-load",
                "listen-connect-race",
                "rmmod-behind-socket-lock",
                "accept-waiting-at-load",
                "param-write-during-rmmod",
                "chained-destructor",
                "rmmod-during-handshake",
                "getpeername-ia32",
                "ktls"
            ]
        );
        let module_only: Vec<&str> = list
            .iter()
            .filter(|s| s.module_only)
            .map(|s| s.name)
            .collect();
        assert_eq!(
            module_only,
            [
                "trusted-proxies",
                "ports",
                "kernel-socket",
                "stats",
                "reload",
                "trusted-proxies-insmod",
                "relisten-accepted",
                "listen-before-load",
                "listen-connect-race",
                "rmmod-behind-socket-lock",
                "accept-waiting-at-load",
                "param-write-during-rmmod",
                "chained-destructor",
                "rmmod-during-handshake",
                "getpeername-ia32",
                "ktls"
            ]
        );
    }

    #[test]
    fn test_only_the_last_scenario_pins_the_module() {
        // Nothing may run after a scenario that leaves the module loaded
        // for good: it is last, and a run without --only leaves it out.
        let list = scenarios();
        let pinning: Vec<&str> = list
            .iter()
            .filter(|s| s.pins_module)
            .map(|s| s.name)
            .collect();
        assert_eq!(pinning, [ktls::NAME]);
        assert_eq!(list.last().map(|s| s.name), Some(ktls::NAME));
    }

    #[test]
    fn test_parse_number() {
        assert_eq!(parse_number("0xf"), Some(15));
        assert_eq!(parse_number("9"), Some(9));
        assert_eq!(parse_number("x"), None);
    }
}
