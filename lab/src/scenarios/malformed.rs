//! Malformed and unusual option areas on every packet of the handshake:
//! every connection must be served, and show the client exactly when the
//! oracle says the module honours a TOA. With the module loaded, the second
//! half of the run has trusted_proxies set, so direct clients' cases (a
//! quarter of all) are judged with the list in force.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::{lab_err, Context, Result};
use crate::lab::{ConnSpec, Expect, Lab};
use crate::lab::{ProxyFamily, Source};
use crate::malformed::{self, Case};
use crate::oracle::{AuthWalk, Kept, Verdict};
use crate::origin::Listener;
use crate::output;
use crate::system;
use crate::tcp_client::OptionPlan;
use crate::trust::PARAM;

/// Share of cases sent by a direct client instead of the proxy.
const DIRECT_PERCENT: u32 = 25;
/// Failed connections shown in the result line.
const SHOWN_FAILURES: usize = 3;
/// Stop after this many failed connections: something is badly wrong.
const MAX_FAILURES: usize = 20;
/// A progress line this often (long runs on a slow guest).
const PROGRESS_EVERY: u64 = 1000;

#[derive(Default)]
struct Tally {
    by_verdict: BTreeMap<&'static str, u64>,
    by_shape: BTreeMap<&'static str, u64>,
    by_placement: BTreeMap<&'static str, u64>,
    failures: Vec<String>,
    failed: usize,
}

impl Tally {
    fn add(&mut self, case: &Case, verdict: Verdict) {
        let v = match verdict {
            Verdict::Client { .. } => "toa",
            Verdict::Kernel(Kept::NoToa) => "no-toa",
            Verdict::Kernel(Kept::Malformed) => "malformed",
            Verdict::Kernel(Kept::Untrusted) => "untrusted",
            Verdict::Kernel(Kept::OtherPort) => "other-port",
        };
        *self.by_verdict.entry(v).or_default() += 1;
        *self.by_shape.entry(case.shape.name()).or_default() += 1;
        *self.by_placement.entry(case.placement.name()).or_default() += 1;
    }
}

fn list(map: &BTreeMap<&'static str, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(lab: &Lab, connections: u64, seed: u64) -> Result<String> {
    let module = lab.expect == Expect::Module;
    let restore = if module {
        Some(system::read_param(PARAM)?)
    } else {
        None
    };
    let auth = probe_auth_walk(lab)?;
    let started = Instant::now();
    let mut tally = Tally::default();
    let outcome = (|| {
        for index in 0..connections {
            if module && index == connections / 2 {
                switch_list(lab, super::trusted::PROXIES)?;
            }
            if index > 0 && index % PROGRESS_EVERY == 0 {
                output::progress(
                    "malformed-options",
                    &format!("{index}/{connections} seed={seed} failed={}", tally.failed),
                );
            }
            let case = malformed::case(seed, index, DIRECT_PERCENT, auth);
            let spec = ConnSpec {
                proxy: case.proxy,
                source: case.source,
                listener: case.listener,
                plan: case.plan.clone(),
            };
            let verdict = lab.verdict(&spec);
            match lab.exercise(&spec) {
                Ok(_) => tally.add(&case, verdict),
                Err(e) => {
                    tally.failed += 1;
                    if tally.failures.len() < SHOWN_FAILURES {
                        tally.failures.push(format!("{case}: {e}"));
                    }
                    lab.origin.settle(lab.step_timeout * 2);
                    if tally.failed >= MAX_FAILURES {
                        break;
                    }
                }
            }
        }
        Ok(())
    })();
    if let Some(list) = restore {
        switch_list(lab, &list).context("restoring trusted_proxies")?;
    }
    outcome?;
    let secs = started.elapsed().as_secs_f64();
    let served = connections - tally.failed as u64;
    let summary = format!(
        "seed={seed} connections={connections} served={served} in {secs:.1} s ({:.0}/s); kernel screen: {}; verdicts: {}; placements: {}; shapes: {}",
        served as f64 / secs.max(1e-9),
        auth.name(),
        list(&tally.by_verdict),
        list(&tally.by_placement),
        list(&tally.by_shape)
    );
    if tally.failed > 0 {
        return Err(lab_err!(
            "{} of {connections} connections failed (replay: --only malformed-options --fuzz-seed {seed}); first: {}; {summary}",
            tally.failed,
            tally.failures.join(" | ")
        ));
    }
    Ok(summary)
}

fn switch_list(lab: &Lab, list: &str) -> Result<()> {
    system::write_param(PARAM, list).map_err(|e| lab_err!("writing {list:?} to {PARAM}: {e}"))?;
    lab.set_trusted_model(crate::trust::Trusted::parse(list)?);
    Ok(())
}

/// Finds out whether this kernel drops segments whose options a signature
/// walk cannot parse (see [`AuthWalk`]), by sending two such SYNs: one with
/// the damage 20 bytes before the end (every 6.7+ kernel drops it), one with
/// it 8 bytes before the end (only a TCP-AO kernel still looks there).
fn probe_auth_walk(lab: &Lab) -> Result<AuthWalk> {
    let mut early = vec![99, 1];
    early.extend([1; 18]);
    let mut late = vec![1; 8];
    late.extend([99, 1, 1, 1, 1, 1, 1, 1]);
    if served(lab, early, AuthWalk::Md5)? {
        return Ok(AuthWalk::Off);
    }
    Ok(if served(lab, late, AuthWalk::Ao)? {
        AuthWalk::Md5
    } else {
        AuthWalk::Ao
    })
}

/// Whether a connection whose SYN carries `syn` (after the MSS) is served;
/// `screen` is the walk that would drop it (asserted, so the probe cannot
/// drift from the model it tests).
fn served(lab: &Lab, syn: Vec<u8>, screen: AuthWalk) -> Result<bool> {
    let mut wire = crate::packet::mss_option(1460).to_vec();
    wire.extend_from_slice(&syn);
    assert!(screen.drops(&wire), "probe must be one the model drops");
    let spec = ConnSpec {
        proxy: ProxyFamily::V4,
        source: Source::Proxy,
        listener: Listener::V4,
        plan: OptionPlan {
            syn,
            ..OptionPlan::default()
        },
    };
    match lab.exercise(&spec) {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("waiting for the SYN-ACK") => {
            lab.origin.settle(lab.step_timeout);
            Ok(false)
        }
        Err(e) => Err(e).context("probing the kernel's option screen"),
    }
}
