//! `toa selftest`: proves, on this kernel and with the module's own
//! settings, that applications see the client a proxy names in its TOA.
//!
//! Everything happens in a private network namespace of this process: a TUN
//! device there is the wire, the toa-sim simulator plays the L4 proxy on it,
//! and ordinary listeners there play the origin. Nothing is made persistent,
//! so the device, the namespace and every socket vanish with the process,
//! however it ends (Ctrl-C included); nothing outside is configured. The
//! module's counters, which are global, do count the test connections.

mod plan;

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use toa_sim::sockaddr::PeerName;
use toa_sim::socket::{self, Accepted};
use toa_sim::tcp_client::{OptionPlan, TcpClient};
use toa_sim::tun::{Addressing, Tun};

use crate::bpf::Active;
use crate::host::Host;
use crate::mode::Mode;
use plan::{Check, Plan, Settings};

/// Prove that accept() and getpeername() return the client named in a TOA.
///
/// In a private network namespace (gone when the command ends) it creates a
/// TUN device, plays an L4 proxy that completes TCP handshakes carrying TOA
/// (IPv4 254/8 to an AF_INET listener, IPv6 254/20 to an AF_INET6 listener,
/// IPv4 to a dual-stack listener, and no TOA), and checks what the
/// listeners' accept() and getpeername() return. Proxy addresses, the
/// listener port and the TOA layouts are chosen so that the active mode's
/// trusted_proxies, ports and formats allow them (toa.ko or the eBPF mode).
/// With the eBPF mode scoped to one cgroup (`toa bpf load --cgroup`), it
/// joins that cgroup first: only that cgroup's sockets are rewritten.
///
/// One line per check; exit 0 only when every check passed. Needs root
/// (CAP_SYS_ADMIN and CAP_NET_ADMIN) and /dev/net/tun.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to wait for each step (handshake, accept) before a check fails.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, value_parser = crate::stats::parse_seconds)]
    step_timeout: f64,
    /// Log every TCP segment on the TUN device to stderr.
    #[arg(long)]
    trace: bool,
}

/// The TUN device inside the private namespace.
const TUN_NAME: &str = "toa-selftest";

pub fn run(host: &Host, args: &Args) -> Result<ExitCode> {
    if !host.is_live() {
        bail!("selftest proves the running kernel; it cannot run against a copy (--root)");
    }
    // First, so that an unprivileged run is told it needs root before anything else.
    enter_private_network()?;
    let mode = Mode::detect(host)?;
    println!("mode: {}", mode.describe());
    if let Mode::Bpf(Active {
        scoped_to: Some(cgroup),
        ..
    }) = &mode
    {
        join_cgroup(cgroup)?;
        println!(
            "selftest: joined {}, where the eBPF mode is scoped, so that its connections pass \
             the programs",
            cgroup.display()
        );
    }
    let plan = plan::plan(&Settings::of(&mode)?)?;
    let tun = Tun::create(TUN_NAME, args.trace)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("creating the TUN device (is the tun module available?)")?;
    wire_up(&tun, &plan)?;

    let step = Duration::from_secs_f64(args.step_timeout);
    let mut failed = 0;
    let mut toa_passed = 0;
    for check in &plan.checks {
        match run_check(&tun, check, step) {
            Ok(seen) => {
                toa_passed += usize::from(check.toa.is_some());
                println!("PASS {}: {}: {seen}", check.name, check.describe());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {}: {}: {why}", check.name, check.describe());
            }
        }
    }
    for s in &plan.skipped {
        println!("SKIP {}: {}", s.name, s.why);
    }
    let passed = plan.checks.len() - failed;
    println!(
        "selftest: {passed} passed, {failed} failed, {} skipped",
        plan.skipped.len()
    );
    if failed == 0 && toa_passed == 0 {
        println!(
            "selftest: no TOA connection could be tried with these settings: nothing is proven"
        );
    }
    Ok(if failed == 0 && toa_passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_UNHEALTHY)
    })
}

/// Moves this process into `cgroup` (the programs run for the sockets a
/// process of the scoped cgroup makes; the process leaves it when it exits).
fn join_cgroup(cgroup: &std::path::Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).with_context(|| {
        format!(
            "joining {}, where the eBPF mode is scoped (its sockets alone are rewritten), \
             through {}",
            cgroup.display(),
            procs.display()
        )
    })
}

/// Moves this process into a new, empty network namespace. Only the calling
/// thread moves, so this runs before any thread exists; child processes
/// (`ip`) inherit it.
fn enter_private_network() -> Result<()> {
    // SAFETY: unshare has no memory effects; it fails cleanly without privilege.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        bail!(
            "toa selftest needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): it creates a private \
             network namespace and a TUN device in it; run it with sudo"
        );
    }
    Err(err).context("creating a private network namespace (unshare CLONE_NEWNET)")
}

/// Gives the origin side its addresses and routes the proxies through the
/// device (each proxy may sit in any trusted network).
fn wire_up(tun: &Tun, plan: &Plan) -> Result<()> {
    let v4 = format!("{}/32", plan.origin_v4);
    let v6 = format!("{}/128", plan.origin_v6);
    let sim = |e: toa_sim::error::Error| anyhow::anyhow!("{e}");
    tun.configure(&Addressing {
        v4_cidr: &v4,
        v6_cidr: &v6,
    })
    .map_err(sim)
    .with_context(|| format!("configuring {}", tun.name()))?;
    for proxy in [plan.proxy_v4, plan.proxy_v6].into_iter().flatten() {
        let (family, host) = if proxy.is_ipv4() {
            ("-4", format!("{proxy}/32"))
        } else {
            ("-6", format!("{proxy}/128"))
        };
        toa_sim::system::run("ip", &[family, "route", "add", &host, "dev", tun.name()])
            .map_err(sim)
            .with_context(|| format!("routing {proxy} through {}", tun.name()))?;
    }
    Ok(())
}

/// One connection: listen, handshake through the simulated proxy, accept,
/// getpeername, compare, close. Ok: what was seen; Err: what differed.
fn run_check(tun: &Tun, check: &Check, step: Duration) -> std::result::Result<String, String> {
    let listener = socket::listen(check.listener, check.origin.port(), check.name)
        .map_err(|e| e.to_string())?;
    let plan = OptionPlan::toa(check.toa.as_ref());
    let client = TcpClient::connect(tun, check.proxy, check.origin, &plan, step)
        .map_err(|e| format!("handshake: {e}"))?;
    let (conn, accepted) = accept_within(&listener, step)?;
    let peer = socket::getpeername(conn.as_fd());
    // Close both sides before judging, so the module frees its record now.
    drop(conn);
    let _ = client.close();
    drop(listener);
    let peer = peer?;
    if accepted == check.expect && peer == check.expect {
        return Ok(format!("accept=getpeername=[{}]", check.expect));
    }
    let mut why = format!(
        "expected [{}], accept returned [{accepted}], getpeername returned [{peer}]",
        check.expect
    );
    if check.toa.is_some() && shows_proxy(&accepted, check) {
        why.push_str(" (the proxy's address: nothing rewrote it)");
    }
    Err(why)
}

fn shows_proxy(seen: &PeerName, check: &Check) -> bool {
    seen.addr.is_some_and(|a| {
        let ip = match a.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a.ip(), Into::into),
            v4 => v4,
        };
        ip == check.proxy.ip() && a.port() == check.proxy.port()
    })
}

fn accept_within(
    listener: &std::os::fd::OwnedFd,
    limit: Duration,
) -> std::result::Result<(std::os::fd::OwnedFd, PeerName), String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match socket::accept(listener, left.min(Duration::from_millis(100))) {
            Accepted::Connection(fd, name) => return Ok((fd, name)),
            Accepted::Failed(e) => return Err(e),
            Accepted::Nothing if left.is_zero() => {
                return Err(format!("no connection to accept within {limit:?}"))
            }
            Accepted::Nothing => {}
        }
    }
}
