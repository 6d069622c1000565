//! `toa-lab chaos`: random syscall sequences on TOA and plain sockets, in the
//! spirit of syzkaller but small and aimed at what toa.ko hooks: sockets
//! (accepted TOA connections, plain loopback ones, IPv4, IPv6 and dual-stack
//! listeners) go through listen, connect (also AF_UNSPEC), accept, shutdown,
//! close, setsockopt (TCP_ULP "tls", IPV6_V6ONLY, IPV6_ADDRFORM,
//! SO_REUSEPORT), getpeername/getsockname and fork-and-close, with rmmod and
//! insmod in between. The kernel log is read after every step: a WARN, BUG,
//! Oops or KASAN/lockdep report fails the run with the seed and the steps
//! that led there; `--seed` replays the same sequence.

use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{lab_err, Context, Result};
use crate::kmsg;
use crate::lab::{ConnSpec, Expect, Held, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::output;
use crate::rng::Rng;
use crate::scenarios::MODULE_NAME;
use crate::system;
use crate::tcp_client::TcpClient;
use crate::toa_option::{Toa, KIND_TOA, KIND_TOA_TENCENT, KIND_TOA_V6_ALIBABA};

pub struct Options {
    pub seed: Option<u64>,
    pub duration: Duration,
    /// Steps at most (the run also ends at `duration`).
    pub max_steps: u64,
    pub module: PathBuf,
    pub module_params: Vec<String>,
    /// tls.ko to load for the TCP_ULP steps; none: those steps are skipped.
    pub tls: Option<PathBuf>,
    pub step_timeout: Duration,
}

/// Sockets alive at once: few enough that steps keep meeting the same ones.
const SLOTS: usize = 12;
/// Steps kept for the failure report.
const TRAIL: usize = 40;
/// What a step says when getpeername wrote past the caller's buffer.
const OVERRUN: &str = "getpeername wrote past a 16-byte buffer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Accepted by the origin from the proxy simulator (TOA or not).
    Proxied,
    /// Made here on loopback.
    Local,
}

struct Slot<'l> {
    fd: OwnedFd,
    family: i32,
    origin: Origin,
    /// The simulator's end of a proxied connection.
    client: Option<TcpClient<'l>>,
}

struct Run<'l> {
    lab: &'l Lab,
    opts: &'l Options,
    rng: Rng,
    slots: Vec<Slot<'l>>,
    trail: Vec<String>,
    loaded: bool,
    pinned: bool,
    tls: bool,
    counts: std::collections::BTreeMap<&'static str, u64>,
    fully: std::collections::BTreeMap<&'static str, u64>,
}

pub fn run(opts: Options) -> i32 {
    let seed = opts.seed.unwrap_or_else(crate::rng::fresh_seed);
    output::start("chaos", &crate::scenarios::kernel_release());
    output::progress("chaos", &format!("seed {seed} (replay: --seed {seed})"));
    let outcome = Lab::setup(Expect::Module, opts.step_timeout, false)
        .and_then(|lab| {
            let result = chaos(&lab, &opts, seed);
            let Lab { origin, .. } = lab;
            origin.shutdown();
            result
        })
        .map_err(|e| format!("seed {seed}: {e}"));
    let failed = outcome.is_err();
    output::result("chaos", &outcome);
    output::done(usize::from(!failed), usize::from(failed));
    i32::from(failed)
}

fn chaos(lab: &Lab, opts: &Options, seed: u64) -> Result<String> {
    let mut kmsg = kmsg::Cursor::at_end()?;
    let mut run = Run {
        lab,
        opts,
        rng: Rng::new(seed),
        slots: Vec::new(),
        trail: Vec::new(),
        loaded: system::module_loaded(MODULE_NAME),
        pinned: false,
        tls: false,
        counts: Default::default(),
        fully: Default::default(),
    };
    if let Some(tls) = &opts.tls {
        run.tls =
            tls.exists() && (system::module_loaded("tls") || system::insmod(tls, &[]).is_ok());
    }
    let start = Instant::now();
    let mut steps = 0u64;
    let watch = Watchdog::start(seed);
    // Every step on stderr, for replaying a seed by hand.
    let verbose = std::env::var_os("TOA_CHAOS_VERBOSE").is_some();
    while steps < opts.max_steps && start.elapsed() < opts.duration {
        steps += 1;
        watch.entering(steps, &run.trail);
        let did = run.step();
        if verbose {
            eprintln!("{steps}: {did}");
        }
        run.trail.push(format!("{steps}: {did}"));
        if run.trail.len() > TRAIL {
            run.trail.remove(0);
        }
        if did.contains(OVERRUN) {
            return Err(lab_err!(
                "step {steps}: {did}\nlast steps:\n{}",
                run.trail.join("\n")
            ));
        }
        if let Some(alarm) = kmsg::first_alarm(&kmsg.read_new()?) {
            return Err(lab_err!(
                "kernel log after step {steps}: {alarm}\nlast steps:\n{}",
                run.trail.join("\n")
            ));
        }
    }
    // Everything closed, the module loaded again: closing is where stale
    // destructors run, and freeing can trail close() by a grace period.
    watch.entering(steps + 1, &["closing every socket".to_string()]);
    run.slots.drain(..).for_each(close_slot);
    if !run.loaded {
        system::insmod(&opts.module, &opts.module_params).context("insmod at the end")?;
    }
    std::thread::sleep(Duration::from_secs(1));
    if let Some(alarm) = kmsg::first_alarm(&kmsg.read_new()?) {
        return Err(lab_err!(
            "kernel log after closing everything: {alarm}\nlast steps:\n{}",
            run.trail.join("\n")
        ));
    }
    let counts: Vec<String> = run
        .counts
        .iter()
        .map(|(k, v)| format!("{k} {v} ({} fully)", run.fully.get(k).unwrap_or(&0)))
        .collect();
    Ok(format!(
        "{steps} steps in {:.0} s, kernel log clean{}; {}",
        start.elapsed().as_secs_f64(),
        if run.pinned {
            ", module pinned by a ULP"
        } else {
            ""
        },
        counts.join(", ")
    ))
}

/// Turns a step that never returns (a syscall or rmmod stuck in the kernel)
/// into a failed run that names the step and where its threads sleep.
struct Watchdog {
    current: std::sync::Arc<std::sync::Mutex<(u64, Instant, String)>>,
}

/// A step taking longer than this is stuck: none waits for more than a few
/// step timeouts.
const STUCK: Duration = Duration::from_secs(45);

impl Watchdog {
    fn start(seed: u64) -> Watchdog {
        let current =
            std::sync::Arc::new(std::sync::Mutex::new((0, Instant::now(), String::new())));
        let seen = current.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let Ok((step, since, trail)) = seen.lock().map(|c| c.clone()) else {
                continue;
            };
            if step == 0 || since.elapsed() < STUCK {
                continue;
            }
            let stacks = kernel_stacks();
            let outcome = Err(format!(
                "seed {seed}: step {step} did not return within {STUCK:?}; where the lab's threads sleep in the kernel:\n{stacks}\nsteps before it:\n{trail}"
            ));
            output::result("chaos", &outcome);
            output::done(0, 1);
            std::process::exit(1);
        });
        Watchdog { current }
    }

    fn entering(&self, step: u64, trail: &[String]) {
        if let Ok(mut c) = self.current.lock() {
            *c = (step, Instant::now(), trail.join("\n"));
        }
    }
}

/// The kernel stack of every thread of this process and of its children
/// (rmmod, insmod), from /proc.
fn kernel_stacks() -> String {
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "(no /proc)".into();
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if pid != me && ppid != Some(me) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stack = std::fs::read_to_string(path.join("stack")).unwrap_or_default();
            if stack.lines().count() > 1 {
                out.push(format!(
                    "{} {}:\n{}",
                    task.file_name().to_string_lossy(),
                    comm.trim(),
                    stack.trim_end()
                ));
            }
        }
    }
    out.join("\n")
}

fn close_slot(slot: Slot<'_>) {
    drop(slot.fd);
    if let Some(client) = slot.client {
        let _ = client.close();
    }
}

impl<'l> Run<'l> {
    /// One random step; returns what it did, for the trail.
    fn step(&mut self) -> String {
        // What fits the socket touched last: chains of calls on one socket
        // are where the bugs are, so a socket's state makes its next steps
        // likelier (a disconnected one listens, a listener gets a client).
        let steps: &[(&str, u32)] = match self.slots.last().map(|s| tcp_state(s.fd.as_raw_fd())) {
            Some(State::Listening) => &[
                ("pair", 30),
                ("connect", 8),
                ("accept", 8),
                ("close", 6),
                ("disconnect", 4),
                ("listen", 3),
                ("names", 4),
            ],
            Some(State::Connected) => &[
                ("relisten", 14),
                ("disconnect", 6),
                ("names", 10),
                ("ulp", 6),
                ("addrform", 5),
                ("shutdown", 4),
                ("close", 10),
                ("fork-close", 4),
                ("accept", 3),
            ],
            Some(State::Idle) => &[
                ("listen", 20),
                ("connect", 6),
                ("close", 6),
                ("v6only", 4),
                ("reuseport", 3),
                ("names", 4),
            ],
            None => &[],
        };
        const ALWAYS: &[(&str, u32)] = &[
            ("proxied", 14),
            ("listener", 6),
            ("module", 6),
            ("close", 3),
            ("ulp", 2),
            ("names", 3),
        ];
        let total: u32 = steps.iter().chain(ALWAYS).map(|s| s.1).sum();
        let mut pick = self.rng.below(total as usize) as u32;
        let name = steps
            .iter()
            .chain(ALWAYS)
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map_or("names", |s| s.0);
        *self.counts.entry(name).or_default() += 1;
        let said = match name {
            "proxied" => self.proxied(),
            "listener" => self.listener(),
            "connect" => self.connect(),
            "accept" => self.accept(),
            "listen" => self.on_slot(|fd, _| errno_of(unsafe { libc::listen(fd, 8) })),
            // Two-call chains, as one step: a loopback client and the child
            // accepted for it; a connected socket turned into a listener.
            "pair" => {
                let connected = self.connect();
                // Loopback handshakes finish in softirq after connect()
                // returns EINPROGRESS: give the listener a moment.
                if let Some(l) = self
                    .slots
                    .iter()
                    .rev()
                    .find(|s| is_listening(s.fd.as_raw_fd()))
                {
                    wait_readable(l.fd.as_raw_fd(), Duration::from_millis(200));
                }
                let accepted = self.accept();
                format!("{connected}; accept {accepted}")
            }
            "relisten" => self.on_slot(|fd, family| {
                let off = disconnect(fd, family);
                let on = errno_of(unsafe { libc::listen(fd, 8) });
                format!("disconnect {off}, listen {on}")
            }),
            "disconnect" => self.on_slot(disconnect),
            "shutdown" => {
                let how = *self
                    .rng
                    .pick(&[libc::SHUT_RD, libc::SHUT_WR, libc::SHUT_RDWR]);
                self.on_slot(move |fd, _| errno_of(unsafe { libc::shutdown(fd, how) }))
            }
            "close" => self.close(),
            "names" => self.on_slot(names),
            "v6only" => {
                let on = self.rng.chance(50);
                self.on_slot(move |fd, _| {
                    set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, on as i32)
                })
            }
            "addrform" => self.on_slot(|fd, _| {
                set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_ADDRFORM, libc::AF_INET)
            }),
            "reuseport" => {
                self.on_slot(|fd, _| set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1))
            }
            "ulp" if self.tls => self.ulp(),
            "ulp" => "ulp: no tls.ko".into(),
            "fork-close" => self.on_slot(fork_close),
            _ => self.module(),
        };
        if !said.contains("os error") && !said.starts_with("no socket") {
            // Steps whose every call worked, apart from those tried.
            *self.fully.entry(name).or_default() += 1;
        }
        format!("{name} {said}")
    }

    /// A socket for the next step, most often one of the last two touched:
    /// as in syzkaller, bugs hide in chains of calls on one socket
    /// (accept, disconnect, listen, accept from it, close, rmmod, ...).
    /// The slot picked becomes the most recent.
    fn pick_slot(&mut self) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let r = self.rng.below(100);
        let i = if r < 55 {
            n - 1
        } else if r < 75 && n >= 2 {
            n - 2
        } else {
            self.rng.below(n)
        };
        Some(self.touch(i))
    }

    /// A listening socket, most often the latest one.
    fn pick_listener(&mut self) -> Option<usize> {
        let listening: Vec<usize> = (0..self.slots.len())
            .filter(|&i| is_listening(self.slots[i].fd.as_raw_fd()))
            .collect();
        let last = *listening.last()?;
        let i = if self.rng.chance(70) {
            last
        } else {
            *self.rng.pick(&listening)
        };
        Some(self.touch(i))
    }

    fn touch(&mut self, i: usize) -> usize {
        let slot = self.slots.remove(i);
        self.slots.push(slot);
        self.slots.len() - 1
    }

    fn on_slot(&mut self, f: impl FnOnce(RawFd, i32) -> String) -> String {
        match self.pick_slot() {
            Some(i) => {
                let s = &self.slots[i];
                format!(
                    "#{i} ({:?} af{}): {}",
                    s.origin,
                    s.family,
                    f(s.fd.as_raw_fd(), s.family)
                )
            }
            None => "no socket".into(),
        }
    }

    fn add(&mut self, slot: Slot<'l>) -> usize {
        // No step may block: accept, connect and the rest all return at once.
        set_nonblocking(slot.fd.as_raw_fd());
        if self.slots.len() == SLOTS {
            // The least recently touched goes.
            close_slot(self.slots.remove(0));
        }
        self.slots.push(slot);
        self.slots.len() - 1
    }

    /// A connection from the proxy simulator, accepted and kept by the origin.
    fn proxied(&mut self) -> String {
        let proxy = *self.rng.pick(&[ProxyFamily::V4, ProxyFamily::V6]);
        let listener = match proxy {
            ProxyFamily::V4 => *self.rng.pick(&[Listener::V4, Listener::V6]),
            ProxyFamily::V6 => Listener::V6,
        };
        let port = 20000 + self.rng.below(20000) as u16;
        let toa = match self.rng.below(5) {
            0 => None,
            1 => Some(Toa::new(
                KIND_TOA,
                SocketAddr::from(([198, 51, 100, 7], port)),
            )),
            2 => Some(Toa::new(
                KIND_TOA,
                format!("[2001:db8::7]:{port}").parse().unwrap(),
            )),
            3 => Some(Toa::new(
                KIND_TOA_V6_ALIBABA,
                format!("[2001:db8::8]:{port}").parse().unwrap(),
            )),
            _ => Some(Toa::new(
                KIND_TOA_TENCENT,
                SocketAddr::from(([203, 0, 113, 5], port)),
            )),
        };
        let spec = ConnSpec::new(proxy, listener, toa);
        self.lab.origin.set_hold(true);
        let opened = self.lab.open(&spec);
        self.lab.origin.set_hold(false);
        match opened {
            Ok(Held {
                client, mut report, ..
            }) => match report.held.take() {
                Some(fd) => {
                    let family = if listener == Listener::V4 {
                        libc::AF_INET
                    } else {
                        libc::AF_INET6
                    };
                    set_nonblocking(fd.as_raw_fd());
                    let i = self.add(Slot {
                        fd,
                        family,
                        origin: Origin::Proxied,
                        client: Some(client),
                    });
                    format!(
                        "#{i} {proxy:?} -> {} listener, toa {toa:?}",
                        listener.name()
                    )
                }
                None => {
                    let _ = client.close();
                    "origin did not keep it".into()
                }
            },
            Err(e) => format!("failed: {e}"),
        }
    }

    /// A loopback listener: AF_INET, AF_INET6 dual-stack or v6-only.
    fn listener(&mut self) -> String {
        let (family, v6only) = *self.rng.pick(&[
            (libc::AF_INET, false),
            (libc::AF_INET6, false),
            (libc::AF_INET6, true),
        ]);
        let Some(fd) = socket(family) else {
            return "socket failed".into();
        };
        let raw = fd.as_raw_fd();
        set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        if v6only {
            set_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1);
        }
        let bound = bind_loopback(raw, family);
        let listened = errno_of(unsafe { libc::listen(raw, 8) });
        let i = self.add(Slot {
            fd,
            family,
            origin: Origin::Local,
            client: None,
        });
        format!("#{i} af{family} v6only={v6only}: bind {bound}, listen {listened}")
    }

    /// A non-blocking loopback connect to whatever a slot is bound to.
    fn connect(&mut self) -> String {
        let Some(target) = self.pick_listener().or_else(|| self.pick_slot()) else {
            return "no socket".into();
        };
        let Some(addr) = local_addr(self.slots[target].fd.as_raw_fd()) else {
            return format!("#{target}: not bound");
        };
        let (family, to) = match addr {
            SocketAddr::V4(a) => (libc::AF_INET, SocketAddr::from(([127, 0, 0, 1], a.port()))),
            SocketAddr::V6(a) => {
                // A dual-stack target may also be reached through IPv4.
                if self.rng.chance(30) {
                    (
                        libc::AF_INET6,
                        format!("[::ffff:127.0.0.1]:{}", a.port()).parse().unwrap(),
                    )
                } else {
                    (
                        libc::AF_INET6,
                        format!("[::1]:{}", a.port()).parse().unwrap(),
                    )
                }
            }
        };
        let Some(fd) = socket(family) else {
            return "socket failed".into();
        };
        set_nonblocking(fd.as_raw_fd());
        let said = connect_to(fd.as_raw_fd(), &to);
        let i = self.add(Slot {
            fd,
            family,
            origin: Origin::Local,
            client: None,
        });
        format!("#{i} -> #{target} {to}: {said}")
    }

    fn accept(&mut self) -> String {
        let Some(i) = self.pick_listener() else {
            return "no socket".into();
        };
        let (raw, family) = (self.slots[i].fd.as_raw_fd(), self.slots[i].family);
        let fd = unsafe {
            libc::accept4(
                raw,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK,
            )
        };
        if fd < 0 {
            return format!("#{i}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let peer = names(fd.as_raw_fd(), family);
        let j = self.add(Slot {
            fd,
            family,
            origin: Origin::Local,
            client: None,
        });
        format!("#{i} -> #{j}: {peer}")
    }

    fn close(&mut self) -> String {
        match self.pick_slot() {
            Some(i) => {
                close_slot(self.slots.remove(i));
                format!("#{i}")
            }
            None => "no socket".into(),
        }
    }

    fn ulp(&mut self) -> String {
        let Some(i) = self.pick_slot() else {
            return "no socket".into();
        };
        let fd = self.slots[i].fd.as_raw_fd();
        let name = b"tls";
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_TCP,
                libc::TCP_ULP,
                name.as_ptr().cast(),
                name.len() as u32,
            )
        };
        let said = errno_of(rc);
        if rc == 0 && self.loaded {
            self.pinned |= pinned();
        }
        format!("#{i}: {said}")
    }

    /// rmmod when loaded (refused once pinned), insmod when not.
    fn module(&mut self) -> String {
        if self.loaded {
            match system::run("rmmod", &[MODULE_NAME]) {
                Ok(()) => {
                    self.loaded = false;
                    self.lab.set_module_loaded(false);
                    "rmmod ok".into()
                }
                Err(e) => {
                    self.pinned |= pinned();
                    format!("rmmod refused (pinned {}): {e}", self.pinned)
                }
            }
        } else {
            match system::insmod(&self.opts.module, &self.opts.module_params) {
                Ok(()) => {
                    self.loaded = true;
                    self.lab.set_module_loaded(true);
                    "insmod ok".into()
                }
                Err(e) => format!("insmod failed: {e}"),
            }
        }
    }
}

fn pinned() -> bool {
    std::fs::read_to_string("/proc/net/toa_stats")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("pinned"))
                .map(|l| l.trim_end().ends_with('1'))
        })
        .unwrap_or(false)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Listening,
    Connected,
    /// Neither: new, disconnected, closed by the peer.
    Idle,
}

/// The TCP state (tcp_info's first byte), coarsely.
fn tcp_state(fd: RawFd) -> State {
    let mut info = [0u8; 256];
    let mut len = info.len() as u32;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    match (rc, info[0]) {
        (0, 10) => State::Listening,
        (0, 1..=4) => State::Connected,
        _ => State::Idle,
    }
}

fn wait_readable(fd: RawFd, limit: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
}

fn is_listening(fd: RawFd) -> bool {
    let mut on: i32 = 0;
    let mut len = size_of::<i32>() as u32;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut on as *mut i32).cast(),
            &mut len,
        )
    };
    rc == 0 && on != 0
}

fn errno_of(rc: libc::c_int) -> String {
    if rc < 0 {
        std::io::Error::last_os_error().to_string()
    } else {
        "ok".into()
    }
}

fn socket(family: i32) -> Option<OwnedFd> {
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(fd: RawFd) {
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn set_int(fd: RawFd, level: i32, name: i32, value: i32) -> String {
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    errno_of(rc)
}

fn bind_loopback(fd: RawFd, family: i32) -> String {
    let to: SocketAddr = if family == libc::AF_INET {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let (sa, len) = sockaddr_of(&to);
    errno_of(unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) })
}

fn connect_to(fd: RawFd, to: &SocketAddr) -> String {
    let (sa, len) = sockaddr_of(to);
    let rc = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
    if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS) {
        return "in progress".into();
    }
    errno_of(rc)
}

/// connect(AF_UNSPEC): disconnects a connected socket (TCP: tcp_disconnect).
fn disconnect(fd: RawFd, _family: i32) -> String {
    let mut sa: libc::sockaddr_storage = unsafe { zeroed() };
    sa.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
    let len = size_of::<libc::sockaddr_in6>() as u32;
    errno_of(unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len) })
}

/// getpeername into a full sockaddr_storage and into a 16-byte buffer (the
/// kernel may truncate, never overrun), and getsockname.
fn names(fd: RawFd, _family: i32) -> String {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as u32;
    let peer = unsafe {
        libc::getpeername(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    let peer_said = if peer == 0 {
        addr_of(&ss).map_or("?".into(), |a| a.to_string())
    } else {
        errno_of(peer)
    };
    // A short buffer with a guard after it: the kernel copies at most 16 bytes.
    let mut small = [0xa5u8; 32];
    let mut small_len: u32 = 16;
    let rc = unsafe { libc::getpeername(fd, small.as_mut_ptr().cast(), &mut small_len) };
    let guard_ok = small[16..].iter().all(|&b| b == 0xa5);
    let mut local: libc::sockaddr_storage = unsafe { zeroed() };
    let mut llen = size_of::<libc::sockaddr_storage>() as u32;
    let sock = unsafe {
        libc::getsockname(
            fd,
            (&mut local as *mut libc::sockaddr_storage).cast(),
            &mut llen,
        )
    };
    if !guard_ok {
        return format!("{OVERRUN} (returned {rc}, len {small_len})");
    }
    format!(
        "peer {peer_said}, short {}, sock {}",
        errno_of(rc),
        errno_of(sock)
    )
}

fn fork_close(fd: RawFd, _family: i32) -> String {
    // SAFETY: the child only calls close() and _exit(), which are
    // async-signal-safe, so forking a threaded process is fine.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => unsafe {
            libc::close(fd);
            libc::_exit(0);
        },
        p if p > 0 => {
            let mut status = 0;
            unsafe { libc::waitpid(p, &mut status, 0) };
            "child closed its copy".into()
        }
        _ => errno_of(-1),
    }
}

fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as u32;
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    (rc == 0)
        .then(|| addr_of(&ss))
        .flatten()
        .filter(|a| a.port() != 0)
}

fn addr_of(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::from((
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::from((
                sin6.sin6_addr.s6_addr,
                u16::from_be(sin6.sin6_port),
            )))
        }
        _ => None,
    }
}

fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, u32) {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}
