//! ports: the local ports whose listeners honour TOA. A TOA reaching any
//! other listener leaves the kernel's answer; the list changes at run time;
//! invalid lists are refused (-EINVAL and a kernel message) and leave the old
//! one in force.

use crate::error::{lab_err, Context, Result};
use crate::kmsg::Cursor;
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::oracle::Verdict;
use crate::origin::Listener;
use crate::system;
use crate::toa_option::{Toa, KIND_TOA};

pub const PARAM: &str = "/sys/module/toa/parameters/ports";
/// Refused: port 0, past 65535, a reversed range, an empty entry, a name, a
/// trailing comma, a negative number.
const INVALID: &[&str] = &["0", "70000", "9000-8000", "80,,443", "http", "8080,", "-1"];

/// One TOA connection to each listener; returns how many showed the client.
fn probe(lab: &Lab, step: &str) -> Result<usize> {
    let mut shown = 0;
    for (i, listener) in [Listener::V4, Listener::V6].into_iter().enumerate() {
        let client = format!("198.51.100.30:{}", 40300 + i);
        let spec = ConnSpec::new(
            ProxyFamily::V4,
            listener,
            Some(Toa::new(KIND_TOA, client.parse().expect("valid address"))),
        );
        shown += usize::from(matches!(lab.verdict(&spec), Verdict::Client { .. }));
        lab.exercise(&spec)
            .context(format!("{step}: {}", listener.name()))?;
    }
    Ok(shown)
}

fn set(lab: &Lab, list: &str, model: Option<Vec<u16>>) -> Result<()> {
    let mut log = Cursor::at_end()?;
    system::write_param(PARAM, list).map_err(|e| lab_err!("writing {list:?} to {PARAM}: {e}"))?;
    let now = system::read_param(PARAM)?;
    if now != list {
        return Err(lab_err!("{PARAM} reads {now:?} after writing {list:?}"));
    }
    if !log.read_new()?.iter().any(|l| l.contains("ports")) {
        return Err(lab_err!("no kernel message after setting ports={list:?}"));
    }
    lab.set_ports_model(model);
    Ok(())
}

pub fn runtime(lab: &Lab) -> Result<String> {
    let start = system::read_param(PARAM)?;
    if !start.is_empty() {
        return Err(lab_err!(
            "{PARAM} reads {start:?}, expected it empty at load"
        ));
    }
    let outcome = (|| {
        let v6_port = Listener::V6.port();
        let only_v6 = v6_port.to_string();
        set(lab, &only_v6, Some(vec![v6_port]))?;
        if probe(lab, &format!("ports={only_v6}"))? != 1 {
            return Err(lab_err!(
                "with ports={only_v6} one listener should show the client"
            ));
        }
        let range = format!("{}-{},9000", Listener::V4.port() - 1, Listener::V4.port());
        set(lab, &range, Some(vec![Listener::V4.port()]))?;
        if probe(lab, &format!("ports={range}"))? != 1 {
            return Err(lab_err!(
                "with ports={range} one listener should show the client"
            ));
        }
        for bad in INVALID {
            super::params::refused_write(PARAM, "ports", bad, &range)?;
        }
        set(lab, "", None)?;
        if probe(lab, "ports cleared")? != 2 {
            return Err(lab_err!(
                "with ports cleared both listeners should show the client"
            ));
        }
        Ok(format!(
            "ports={only_v6}: TOA to :{} kept the proxy; ports={range}: TOA to :{v6_port} kept the proxy; {} invalid lists refused with EINVAL and a kernel message; cleared: both listeners honour TOA",
            Listener::V4.port(),
            INVALID.len()
        ))
    })();
    if outcome.is_err() {
        let _ = system::write_param(PARAM, "");
        lab.set_ports_model(None);
    }
    outcome
}
