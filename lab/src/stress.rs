//! Stress for an SMP guest (`toa-lab stress`).
//!
//! 1. `reload-under-load`: while one thread unloads and loads toa.ko again
//!    and again, the simulator keeps making TOA connections, several threads
//!    call getpeername() in a loop on connections held open, and a storm of
//!    hundreds more asks about one of them. Every connection must be served
//!    and every answer must be either the client (module loaded, record
//!    present) or the proxy (the kernel's own), and a thread that saw the
//!    proxy on a connection never sees the client there again (a record
//!    does not come back after rmmod); the host judges dmesg for oopses and
//!    warnings.
//! 2. `churn`: many short TOA connections (IPv4 and IPv6 formats in turn),
//!    each checked exactly; afterwards every IPv6 record is freed
//!    (`ip6_address_alloc` == `ip6_address_free`) and the module holds as
//!    many records as before (`records_live`), so its memory is back where
//!    it started.

use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{lab_err, Context, Result};
use crate::lab::{expected_peer, ConnSpec, Expect, Lab, ProxyFamily};
use crate::oracle::{Kept, Verdict};
use crate::origin::{self, Listener};
use crate::output;
use crate::scenarios::{kernel_release, MODULE_NAME, STATS_SETTLE};
use crate::sockaddr::PeerName;
use crate::stats::{self, Snapshot};
use crate::system;
use crate::toa_option::{Toa, KIND_TOA, KIND_TOA_TENCENT, KIND_TOA_V6_ALIBABA};

pub struct Options {
    pub module: PathBuf,
    pub cycles: u32,
    /// Connections held open for the getpeername threads.
    pub held: usize,
    pub threads: usize,
    /// Threads of the getpeername storm on one more held connection.
    pub storm: usize,
    pub churn: u64,
    pub step_timeout: Duration,
}

/// Pause after rmmod and after insmod: long enough for connections to land
/// on both sides of each transition.
const UNLOADED_FOR: Duration = Duration::from_millis(30);
const LOADED_FOR: Duration = Duration::from_millis(60);
const CHURN_PROGRESS: u64 = 10_000;
/// Stop a phase after this many failed connections.
const MAX_FAILURES: usize = 10;

/// The TOA formats in turn: IPv4 and IPv6 clients on both listeners.
fn spec(i: u64) -> ConnSpec {
    let port = 30_000 + (i % 30_000) as u16;
    let host = (i % 250) as u8 + 1;
    let v4 = SocketAddr::from(([198, 51, 100, host], port));
    let host6 = (i % 0xfff0) as u16 + 1;
    let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host6), port));
    match i % 4 {
        0 => ConnSpec::new(ProxyFamily::V4, Listener::V4, Some(Toa::new(KIND_TOA, v4))),
        1 => ConnSpec::new(ProxyFamily::V6, Listener::V6, Some(Toa::new(KIND_TOA, v6))),
        2 => ConnSpec::new(
            ProxyFamily::V4,
            Listener::V6,
            Some(Toa::new(KIND_TOA_TENCENT, v4)),
        ),
        // An AF_INET listener handed an IPv6 client (through an IPv4 proxy).
        _ => ConnSpec::new(
            ProxyFamily::V4,
            Listener::V4,
            Some(Toa::new(KIND_TOA_V6_ALIBABA, v6)),
        ),
    }
}

/// The two answers an application may get while the module comes and goes.
fn either(spec: &ConnSpec, verdict: Verdict, source: SocketAddr) -> [PeerName; 2] {
    [
        expected_peer(spec.listener, verdict, source),
        expected_peer(spec.listener, Verdict::Kernel(Kept::NoToa), source),
    ]
}

pub fn run(opts: Options) -> i32 {
    output::start("stress", &kernel_release());
    let lab = match Lab::setup(Expect::Module, opts.step_timeout, false) {
        Ok(lab) => lab,
        Err(e) => {
            output::result("setup", &Err(e.to_string()));
            output::done(0, 1);
            return 1;
        }
    };
    let reload = reload_under_load(&lab, &opts);
    // The cycles ended with insmod: toa.ko takes over listeners that listen()
    // after it loaded, as a restarted service would.
    let churned = lab
        .origin
        .relisten(opts.step_timeout)
        .and_then(|()| churn(&lab, opts.churn));
    let outcomes = [("reload-under-load", reload), ("churn", churned)];
    let mut fail = 0;
    for (name, outcome) in &outcomes {
        let outcome = match outcome {
            Ok(detail) => Ok(detail.clone()),
            Err(e) => Err(e.to_string()),
        };
        fail += usize::from(outcome.is_err());
        output::result(name, &outcome);
    }
    if let Ok(s) = stats::read() {
        output::stats(&s);
    }
    output::done(outcomes.len() - fail, fail);
    lab.origin.settle(opts.step_timeout);
    i32::from(fail > 0)
}

/// What the getpeername threads saw.
#[derive(Default)]
struct Calls {
    client: AtomicU64,
    proxy: AtomicU64,
    wrong: Mutex<Vec<String>>,
}

fn reload_under_load(lab: &Lab, opts: &Options) -> Result<String> {
    // Held connections: made with the module loaded, so they start with records.
    let mut clients = Vec::new();
    let mut watched: Vec<(OwnedFd, [PeerName; 2])> = Vec::new();
    lab.origin.set_hold(true);
    let opened = (|| {
        // The last one is the storm's.
        for i in 0..opts.held as u64 + 1 {
            let s = spec(i);
            let mut held = lab
                .open(&s)
                .context(format!("opening held connection {i}"))?;
            let fd = held
                .report
                .held
                .take()
                .ok_or_else(|| lab_err!("the origin did not keep connection {i} open"))?;
            let source = held.client.local();
            lab.verify(&s, held.verdict, source, &held.report)?;
            watched.push((fd, either(&s, held.verdict, source)));
            clients.push(held.client);
        }
        Ok::<(), crate::error::Error>(())
    })();
    lab.origin.set_hold(false);
    opened?;

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Calls::default());
    let watched = Arc::new(watched);
    let mut readers = Vec::new();
    let held = opts.held;
    // Readers 0..threads walk the held connections; the storm's all ask
    // about the last one.
    for t in 0..opts.threads + opts.storm {
        let (stop, calls, watched) = (stop.clone(), calls.clone(), watched.clone());
        readers.push(std::thread::spawn(move || {
            let mut i = t;
            let mut proxy_seen = vec![false; watched.len()];
            while !stop.load(Ordering::Relaxed) {
                let at = if t < held { i % held } else { held };
                let (fd, [client, proxy]) = &watched[at];
                i += 1;
                let wrong = match origin::getpeername(fd.as_fd()) {
                    Ok(seen) if seen == *client && proxy_seen[at] => {
                        Some(format!("[{client}] after the proxy on connection {at}"))
                    }
                    Ok(seen) if seen == *client => {
                        calls.client.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Ok(seen) if seen == *proxy => {
                        proxy_seen[at] = true;
                        calls.proxy.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    other => Some(format!("{other:?}, expected [{client}] or [{proxy}]")),
                };
                if let Some(w) = wrong {
                    let mut list = calls.wrong.lock().unwrap_or_else(|e| e.into_inner());
                    if list.len() < 3 {
                        list.push(w);
                    }
                }
            }
        }));
    }

    let reloads_done = Arc::new(AtomicBool::new(false));
    let reloader = {
        let (module, cycles, done) = (opts.module.clone(), opts.cycles, reloads_done.clone());
        std::thread::spawn(move || -> Result<u32> {
            let outcome = (|| {
                for cycle in 0..cycles {
                    system::run("rmmod", &[MODULE_NAME]).context(format!("cycle {cycle}"))?;
                    std::thread::sleep(UNLOADED_FOR);
                    system::insmod(&module, &[]).context(format!("cycle {cycle}"))?;
                    std::thread::sleep(LOADED_FOR);
                }
                Ok(cycles)
            })();
            done.store(true, Ordering::SeqCst);
            outcome
        })
    };

    // Connections while the module comes and goes.
    let started = Instant::now();
    let (mut made, mut failures) = (0u64, Vec::new());
    while !reloads_done.load(Ordering::SeqCst) && failures.len() < MAX_FAILURES {
        let s = spec(made);
        made += 1;
        match lab.open(&s) {
            Ok(held) => {
                let source = held.client.local();
                let allowed = either(&s, held.verdict, source);
                let r = &held.report;
                let ok = |seen: &std::result::Result<PeerName, String>| {
                    seen.as_ref().is_ok_and(|p| allowed.contains(p))
                };
                if !ok(&r.accept) || !ok(&r.peername) {
                    failures.push(format!(
                        "connection {made}: accept {:?} getpeername {:?}, expected [{}] or [{}]",
                        r.accept, r.peername, allowed[0], allowed[1]
                    ));
                }
                if let Err(e) = held.client.close() {
                    failures.push(format!("connection {made}: closing: {e}"));
                }
            }
            Err(e) => {
                failures.push(format!("connection {made}: {e}"));
                lab.origin.settle(lab.step_timeout * 2);
            }
        }
    }
    let cycles = reloader
        .join()
        .map_err(|_| lab_err!("the reload thread panicked"))?;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join()
            .map_err(|_| lab_err!("a getpeername thread panicked"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    // The module is loaded again (each cycle ends with insmod); let the
    // held connections go.
    drop(watched);
    for c in clients {
        c.close().context("closing a held connection")?;
    }
    let cycles = cycles?;
    let wrong = calls.wrong.lock().unwrap().clone();
    let summary = format!(
        "{cycles} rmmod/insmod cycles in {secs:.1} s with {} getpeername threads on {} held connections and a storm of {} on one more: {} calls (client {}, proxy {}); {made} connections made meanwhile",
        opts.threads,
        opts.held,
        opts.storm,
        calls.client.load(Ordering::Relaxed) + calls.proxy.load(Ordering::Relaxed),
        calls.client.load(Ordering::Relaxed),
        calls.proxy.load(Ordering::Relaxed),
    );
    if !wrong.is_empty() || !failures.is_empty() {
        return Err(lab_err!(
            "{summary}; wrong getpeername answers: {wrong:?}; failed connections ({}): {}",
            failures.len(),
            failures.join(" | ")
        ));
    }
    if cycles < opts.cycles {
        return Err(lab_err!(
            "{summary}; only {cycles} of {} cycles",
            opts.cycles
        ));
    }
    Ok(summary)
}

/// The counters once the module is idle again (every IPv6 record freed and,
/// if given, `want_records` records left), or after 3 × `STATS_SETTLE`.
fn idle_stats(want_records: Option<u64>) -> Result<Snapshot> {
    stats::read_until(STATS_SETTLE * 3, |s| {
        s.get("ip6_address_alloc") == s.get("ip6_address_free")
            && want_records.is_none_or(|want| s.get("records_live") == Some(want))
    })
}

fn churn(lab: &Lab, connections: u64) -> Result<String> {
    // Short connections recycle the proxy's ports faster than TIME_WAIT
    // (60 s) ends; a SYN meeting a TIME_WAIT socket may be refused, which
    // would test the kernel, not the module.
    system::write_sysctl("/proc/sys/net/ipv4/tcp_max_tw_buckets", "0")?;
    let before = idle_stats(None)?;
    let records_before = before
        .get("records_live")
        .ok_or_else(|| lab_err!("toa_stats has no records_live line"))?;
    let started = Instant::now();
    let mut failures = Vec::new();
    for i in 0..connections {
        if i > 0 && i % CHURN_PROGRESS == 0 {
            output::progress(
                "churn",
                &format!("{i}/{connections} failed={}", failures.len()),
            );
        }
        if let Err(e) = lab.exercise(&spec(i)) {
            failures.push(format!("connection {i}: {e}"));
            lab.origin.settle(lab.step_timeout * 2);
            if failures.len() >= MAX_FAILURES {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = idle_stats(Some(records_before))?;
    let d = |name: &str| {
        after
            .get(name)
            .unwrap_or(0)
            .wrapping_sub(before.get(name).unwrap_or(0))
    };
    let summary = format!(
        "{connections} TOA connections in {secs:.1} s ({:.0}/s): syn_recv_sock_toa+{} ip6_address_alloc+{} ip6_address_free+{} record_alloc_failed+{} records_live {} -> {}",
        connections as f64 / secs.max(1e-9),
        d("syn_recv_sock_toa"),
        d("ip6_address_alloc"),
        d("ip6_address_free"),
        d("record_alloc_failed"),
        records_before,
        after.get("records_live").unwrap_or(u64::MAX),
    );
    let mut wrong = failures;
    if d("syn_recv_sock_toa") != connections {
        wrong.push(format!(
            "syn_recv_sock_toa moved {}, not {connections}",
            d("syn_recv_sock_toa")
        ));
    }
    let v6 = connections / 2;
    if d("ip6_address_alloc") != v6 || d("ip6_address_free") != v6 {
        wrong.push(format!("expected {v6} IPv6 records made and freed"));
    }
    if after.get("records_live") != Some(records_before) || d("record_alloc_failed") != 0 {
        wrong.push("the module holds a different number of records than before".into());
    }
    if !wrong.is_empty() {
        return Err(lab_err!("{summary}; {}", wrong.join(" | ")));
    }
    Ok(summary)
}
