//! The getpeername storm: hundreds of threads ask for the peer of one TOA
//! connection at once. Since 5.16 `inet_getname` takes the socket lock, so
//! callers queue up and sleep; a hook with a bounded pool of instances (the
//! seed's kretprobes) lost some of them and answered with the proxy. Every
//! answer must be the client.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use crate::error::{lab_err, Context, Result};
use crate::lab::{expected_peer, ConnSpec, Held, Lab, ProxyFamily};
use crate::origin::{self, Listener};
use crate::toa_option::{Toa, KIND_TOA};

pub const THREADS: usize = 256;
const CALLS_PER_THREAD: u64 = 200;

pub fn run(lab: &Lab) -> Result<String> {
    let client = "198.51.100.20:40020".parse().expect("valid address");
    let spec = ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        Some(Toa::new(KIND_TOA, client)),
    );
    lab.origin.set_hold(true);
    let opened = lab.open(&spec);
    lab.origin.set_hold(false);
    let Held {
        client,
        mut report,
        verdict,
    } = opened.context("opening the connection the storm asks about")?;
    let source = client.local();
    let fd = report.held.take();
    let outcome = (|| {
        let fd = fd.ok_or_else(|| lab_err!("the origin did not keep the socket open"))?;
        lab.verify(&spec, verdict, source, &report)?;
        let want = expected_peer(spec.listener, verdict, source);
        let fd = Arc::new(fd);
        let start = Arc::new(Barrier::new(THREADS));
        let right = Arc::new(AtomicU64::new(0));
        let wrong: Arc<Mutex<(u64, Vec<String>)>> = Arc::default();
        let began = Instant::now();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (fd, start, right, wrong, want) = (
                    fd.clone(),
                    start.clone(),
                    right.clone(),
                    wrong.clone(),
                    want,
                );
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..CALLS_PER_THREAD {
                        match origin::getpeername(fd.as_fd()) {
                            Ok(seen) if seen == want => {
                                right.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                let mut w = wrong.lock().unwrap_or_else(|e| e.into_inner());
                                w.0 += 1;
                                if w.1.len() < 3 {
                                    w.1.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join()
                .map_err(|_| lab_err!("a getpeername thread panicked"))?;
        }
        let secs = began.elapsed().as_secs_f64();
        let calls = right.load(Ordering::Relaxed);
        let (bad, examples) = wrong.lock().unwrap_or_else(|e| e.into_inner()).clone();
        lab.book_getnames(verdict, calls + bad);
        if bad > 0 {
            return Err(lab_err!(
                "{bad} of {} answers were not [{want}], e.g. {examples:?}",
                calls + bad
            ));
        }
        Ok(format!(
            "{THREADS} threads, {calls} getpeername() calls in {secs:.1} s, every one [{want}]"
        ))
    })();
    let closed = client.close().context("closing the storm's connection");
    let detail = outcome?;
    closed?;
    Ok(detail)
}
