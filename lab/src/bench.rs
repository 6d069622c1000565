//! What toa.ko costs, measured in one boot (`toa-lab bench`).
//!
//! Each round measures every figure once with the module unloaded and once
//! loaded, the order alternating between rounds so a slow drift of the guest
//! does not favour either state. The host runs the guest under
//! `qemu -icount`, where time advances per executed instruction: the rates
//! are then repeatable, and a ratio between the two states is the module's
//! cost in instructions. Results are `TOA-LAB BENCH ...` lines the host turns
//! into medians and ratios.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cgroup_noop;
use crate::error::{lab_err, Context, Result};
use crate::lab::{ConnSpec, Expect, Lab, ProxyFamily};
use crate::origin::{self, Listener};
use crate::output;
use crate::scenarios::{kernel_release, toa_command, MODULE_NAME};
use crate::stats;
use crate::system;
use crate::toa_option::{Toa, KIND_TOA};

pub struct Options {
    pub module: PathBuf,
    pub rounds: u32,
    /// How long each figure is measured, per round and state.
    pub window: Duration,
    pub step_timeout: Duration,
    /// The operator's `toa` command: with it, the eBPF mode (`toa bpf load`)
    /// is measured as a third state.
    pub loader: Option<PathBuf>,
}

/// What rewrites peer names while a figure is measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Unloaded,
    Module,
    /// The eBPF mode with the capture path the kernel accepts (fexit from 5.11).
    Bpf,
    /// The eBPF mode with the sock_ops capture, the fallback.
    BpfSockOps,
    /// The eBPF mode scoped to one cgroup (`--cgroup`), measured from a
    /// process outside it: what every other service pays.
    BpfScopedOut,
    /// ... and from a process inside it: what the scoped service pays.
    BpfScopedIn,
    /// No toa at all: a do-nothing getpeername program on the same cgroup,
    /// measured from outside it. The floor any cgroup program sets for
    /// everyone else, to hold `BpfScopedOut` against.
    NoopScopedOut,
}

/// The cgroup the scoped states attach to, under the cgroup v2 root.
const SCOPE: &str = "toa-bench-scope";
/// Where the bench finds (or mounts) the cgroup v2 root in the guest.
const CGROUP2: &str = "/sys/fs/cgroup";

impl State {
    /// The `module=` word of the BENCH line.
    fn word(self) -> &'static str {
        match self {
            State::Unloaded => "unloaded",
            State::Module => "loaded",
            State::Bpf => "bpf",
            State::BpfSockOps => "bpf-sock-ops",
            State::BpfScopedOut => "bpf-scoped-out",
            State::BpfScopedIn => "bpf-scoped-in",
            State::NoopScopedOut => "noop-scoped-out",
        }
    }

    /// The cgroup `toa bpf load --cgroup` is given, for the scoped states.
    fn scope(self) -> Option<&'static str> {
        matches!(self, State::BpfScopedOut | State::BpfScopedIn).then_some(SCOPE)
    }

    /// What connections show in this state, from where the bench runs.
    fn expect(self) -> Expect {
        match self {
            State::Unloaded | State::BpfScopedOut | State::NoopScopedOut => Expect::Kernel,
            State::Module => Expect::Module,
            State::Bpf | State::BpfSockOps | State::BpfScopedIn => Expect::Bpf,
        }
    }

    /// `toa bpf load --capture` for the eBPF states.
    fn capture(self) -> Option<&'static str> {
        match self {
            State::Bpf => Some("auto"),
            State::BpfSockOps => Some("sock-ops"),
            State::BpfScopedOut | State::BpfScopedIn => Some("auto"),
            State::Unloaded | State::Module | State::NoopScopedOut => None,
        }
    }
}

/// IPv4 TOA connections held to count the module's allocations.
const HELD_FOR_ALLOCS: u64 = 8;

fn toa_spec(i: u64) -> ConnSpec {
    let client = SocketAddr::from(([198, 51, 100, 9], 40_000 + (i % 20_000) as u16));
    ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        Some(Toa::new(KIND_TOA, client)),
    )
}

pub fn run(opts: Options) -> i32 {
    output::start("bench", &kernel_release());
    let outcome = Lab::setup(Expect::Module, opts.step_timeout, false)
        .and_then(|mut lab| measure(&mut lab, &opts));
    let outcome = outcome.map_err(|e| e.to_string());
    output::result("bench", &outcome);
    let fail = usize::from(outcome.is_err());
    output::done(1 - fail, fail);
    i32::from(fail > 0)
}

fn set_loaded(module: &std::path::Path, loaded: bool) -> Result<()> {
    match (system::module_loaded(MODULE_NAME), loaded) {
        (false, true) => system::insmod(module, &[]),
        (true, false) => system::run("rmmod", &[MODULE_NAME]),
        _ => Ok(()),
    }
}

/// A state in force: what `toa bpf load` reported, and the do-nothing
/// program's links while `NoopScopedOut` is measured (dropping detaches).
struct Applied {
    capture: Option<String>,
    _noop: Option<cgroup_noop::Attached>,
}

/// One state at a time: the module and the eBPF mode never run together.
fn set_state(opts: &Options, state: State) -> Result<Applied> {
    if let Some(loader) = &opts.loader {
        system::run(&loader.to_string_lossy(), &["bpf", "unload"])?;
    }
    set_loaded(&opts.module, state == State::Module)?;
    // The bench's process (all its threads) joins the scope only for the
    // state measured inside it; the sockets a state makes are its own, so
    // they belong to the cgroup the process is in then.
    join_cgroup(if state == State::BpfScopedIn {
        Some(SCOPE)
    } else {
        None
    })?;
    if state == State::NoopScopedOut {
        let noop = cgroup_noop::attach(&std::path::Path::new(CGROUP2).join(SCOPE))?;
        return Ok(Applied {
            capture: None,
            _noop: Some(noop),
        });
    }
    let Some(capture) = state.capture() else {
        return Ok(Applied {
            capture: None,
            _noop: None,
        });
    };
    let loader = opts
        .loader
        .as_ref()
        .expect("eBPF states only with a loader");
    let mut args = vec!["bpf", "load", "--capture", capture];
    if let Some(scope) = state.scope() {
        args.extend(["--cgroup", scope]);
    }
    let text = toa_command(loader, &args)?;
    // "  capture         = fexit (fexit on ...)"
    let used = text.lines().find_map(|l| {
        let rest = l
            .trim()
            .strip_prefix("capture")?
            .trim_start()
            .strip_prefix('=')?;
        rest.split_whitespace().next().map(str::to_string)
    });
    let used =
        used.ok_or_else(|| lab_err!("toa bpf load did not say which capture it attached: {text}"))?;
    Ok(Applied {
        capture: Some(used),
        _noop: None,
    })
}

/// Moves this process into `scope` under the cgroup v2 root, or back to the
/// root with `None`. The guest mounts no cgroup2 when it runs toa.ko: the
/// bench mounts it where the eBPF mode finds it, with the scope made in it
/// (the scoped states attach there wherever the bench runs).
fn join_cgroup(scope: Option<&str>) -> Result<()> {
    let root = std::path::Path::new(CGROUP2);
    if !root.join("cgroup.procs").exists() {
        system::run("mount", &["-t", "cgroup2", "cgroup2", CGROUP2])?;
    }
    let made = root.join(SCOPE);
    std::fs::create_dir_all(&made).context(format!("creating {}", made.display()))?;
    let dir = match scope {
        Some(s) => root.join(s),
        None => root.to_path_buf(),
    };
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .context(format!("moving the bench into {}", procs.display()))
}

fn measure(lab: &mut Lab, opts: &Options) -> Result<String> {
    let mut connection = 0u64;
    let mut states = vec![State::Unloaded, State::Module];
    if opts.loader.is_some() {
        states.extend([
            State::Bpf,
            State::BpfSockOps,
            State::BpfScopedOut,
            State::BpfScopedIn,
            State::NoopScopedOut,
        ]);
    }
    warm_up(lab, opts, &mut connection)?;
    for round in 1..=opts.rounds {
        // Rotate the order, so a slow drift of the guest favours no state.
        let mut order = states.clone();
        order.rotate_left((round as usize - 1) % states.len());
        for state in order {
            let applied = set_state(opts, state)?;
            // toa.ko takes over listeners that listen() while it is loaded:
            // every state gets listeners of its own, as a restarted service.
            lab.origin.relisten(lab.step_timeout)?;
            let listener =
                TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
            // Connections are checked against what this state must show.
            lab.expect = state.expect();
            let accept = accept_rate(&listener, opts.window)?;
            let (toa_getpeername, setup) = toa_figures(lab, opts.window, &mut connection)?;
            let plain_getpeername = plain_getpeername_rate(&listener, opts.window)?;
            let capture = (applied.capture.as_ref())
                .map(|c| format!(" capture={c}"))
                .unwrap_or_default();
            output::bench(&format!(
                "round={round} module={}{capture} accept_per_s={accept:.1} getpeername_toa_per_s={toa_getpeername:.1} getpeername_plain_per_s={plain_getpeername:.1} toa_setup_per_s={setup:.1}",
                state.word(),
            ));
        }
    }
    set_state(opts, State::Module)?;
    lab.origin.relisten(lab.step_timeout)?;
    lab.expect = Expect::Module;
    let allocs = allocations_per_v4_toa(lab, &mut connection)?;
    output::bench(&format!("allocs_per_v4_toa={allocs:.2}"));
    Ok(format!(
        "{} rounds of {:?} per figure and state; {allocs:.2} allocations per IPv4 TOA connection",
        opts.rounds, opts.window
    ))
}

/// Every figure once, unreported, before the first round: the first
/// connections of a boot grow the kernel's slabs and hash tables, which made
/// the first state measured about 1 % slower than the same state later.
fn warm_up(lab: &mut Lab, opts: &Options, connection: &mut u64) -> Result<()> {
    set_state(opts, State::Unloaded)?;
    lab.origin.relisten(lab.step_timeout)?;
    lab.expect = Expect::Kernel;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    accept_rate(&listener, opts.window)?;
    toa_figures(lab, opts.window / 4, connection)?;
    plain_getpeername_rate(&listener, opts.window / 4)?;
    Ok(())
}

/// Loopback connect + accept (with the peer's address, as servers do) +
/// close, per second: what every connection pays, TOA or not.
fn accept_rate(listener: &TcpListener, window: Duration) -> Result<f64> {
    let target = listener.local_addr().context("loopback listener address")?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        let client = TcpStream::connect(target).context("loopback connect")?;
        let (server, _peer) = listener.accept().context("loopback accept")?;
        drop(client);
        drop(server);
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// getpeername() per second on an accepted loopback connection.
fn plain_getpeername_rate(listener: &TcpListener, window: Duration) -> Result<f64> {
    let client = TcpStream::connect(listener.local_addr().context("loopback listener address")?)
        .context("loopback connect")?;
    let (server, _) = listener.accept().context("loopback accept")?;
    let rate = getpeername_rate(&server, window);
    drop(client);
    rate
}

/// getpeername() per second as an application loop makes the call: into
/// one reused sockaddr_storage, nothing decoded. Decoding each answer (as
/// the lab's checks do) added about 120 ns of user-space work to every call
/// in both states, which moved every ratio towards 1 (0.806 against 0.782
/// for the eBPF mode on plain sockets, measured by a bare loop in the same
/// kind of boot). The answer is checked once, outside the timed loop.
fn getpeername_rate(socket: &impl AsFd, window: Duration) -> Result<f64> {
    let fd = socket.as_fd().as_raw_fd();
    origin::getpeername(socket.as_fd()).map_err(|e| lab_err!("{e}"))?;
    // SAFETY: zeroed storage is valid; the kernel writes at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..64 {
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: a live sockaddr_storage of the length given.
            let rc = unsafe { libc::getpeername(fd, std::ptr::addr_of_mut!(ss).cast(), &mut len) };
            if rc < 0 {
                return Err(lab_err!("getpeername: {}", std::io::Error::last_os_error()));
            }
        }
        n += 64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// getpeername() per second on a held TOA connection, and complete TOA
/// connections (handshake through the simulator, request, reply, close) per
/// second.
fn toa_figures(lab: &Lab, window: Duration, connection: &mut u64) -> Result<(f64, f64)> {
    lab.origin.set_hold(true);
    let held = lab.open(&toa_spec(*connection));
    lab.origin.set_hold(false);
    *connection += 1;
    let mut held = held.context("opening the held TOA connection")?;
    let fd = held
        .report
        .held
        .take()
        .ok_or_else(|| lab_err!("the origin did not keep the TOA connection open"))?;
    let getpeername = getpeername_rate(&fd, window)?;
    drop(fd);
    held.client
        .close()
        .context("closing the held TOA connection")?;

    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        lab.exercise(&toa_spec(*connection))
            .context(format!("TOA connection {connection}"))?;
        *connection += 1;
        n += 1;
    }
    Ok((getpeername, n as f64 / start.elapsed().as_secs_f64()))
}

/// Records the module holds per open IPv4 TOA connection (`records_live`).
fn allocations_per_v4_toa(lab: &Lab, connection: &mut u64) -> Result<f64> {
    let live = || -> Result<u64> {
        stats::read()?
            .get("records_live")
            .ok_or_else(|| lab_err!("toa_stats has no records_live line"))
    };
    let before = live()?;
    let mut held = Vec::new();
    lab.origin.set_hold(true);
    let opened = (|| {
        for _ in 0..HELD_FOR_ALLOCS {
            let mut h = lab.open(&toa_spec(*connection))?;
            *connection += 1;
            let fd = h.report.held.take();
            held.push((h.client, fd));
        }
        Ok::<(), crate::error::Error>(())
    })();
    lab.origin.set_hold(false);
    opened?;
    let during = live()?;
    for (client, fd) in held {
        drop(fd);
        client.close()?;
    }
    Ok(during.saturating_sub(before) as f64 / HELD_FOR_ALLOCS as f64)
}
