//! trusted_proxies: with the list set, a proxy's TOA changes what the
//! application sees and a direct client's forged one does not; the list can
//! be changed at run time; invalid lists are refused (-EINVAL and a kernel
//! message) and leave the old list in force.

use super::{counted, Shared, MODULE_NAME};
use crate::error::{lab_err, Context, Result};
use crate::kmsg::Cursor;
use crate::lab::{ConnSpec, Lab, ProxyFamily, Source};
use crate::origin::Listener;
use crate::system;
use crate::toa_option::{Toa, KIND_TOA, KIND_TOA_V6_ALIBABA};
use crate::trust::{Trusted, PARAM};

/// The lab's proxy addresses, as an operator would list them.
pub const PROXIES: &str = "10.0.0.2,fd00::2";
/// A list that takes in the direct IPv4 client and leaves out every IPv6 source.
const SUBNET_V4: &str = "10.0.0.0/24";
/// Refused at run time: host bits below the prefix, not an address, prefix
/// too long, empty entry, IPv6 host bits, a name.
const INVALID: &[&str] = &[
    "10.0.0.1/8",
    "300.1.1.1",
    "fd00::/129",
    "10.0.0.2,,fd00::2",
    "fd00::2/64",
    "proxy.example",
];
/// Refused at load time.
const INVALID_AT_LOAD: &[&str] = &["10.0.0.1/8", "300.1.1.1"];

fn toa(kind: u8, client: &str) -> Option<Toa> {
    Some(Toa::new(kind, client.parse().expect("valid address")))
}

/// Proxy and direct connections of each family pair, each with a TOA, plus
/// a direct one without; every outcome follows the lab's model of the list.
/// Returns how many showed the TOA client and how many the sender.
pub(super) fn probe(lab: &Lab, step: &str) -> Result<(usize, usize)> {
    use Listener as L;
    use ProxyFamily as P;
    let specs = [
        ConnSpec::new(P::V4, L::V4, toa(KIND_TOA, "198.51.100.10:40100")),
        ConnSpec::new(P::V6, L::V6, toa(KIND_TOA, "[2001:db8::10]:40101")),
        ConnSpec::new(P::V4, L::V6, toa(KIND_TOA, "198.51.100.11:40102")),
        ConnSpec::new(P::V4, L::V4, toa(KIND_TOA, "203.0.113.66:40103")).from(Source::Direct),
        ConnSpec::new(
            P::V6,
            L::V6,
            toa(KIND_TOA_V6_ALIBABA, "[2001:db8::66]:40104"),
        )
        .from(Source::Direct),
        ConnSpec::new(P::V4, L::V6, toa(KIND_TOA, "203.0.113.67:40105")).from(Source::Direct),
        ConnSpec::new(P::V4, L::V4, None).from(Source::Direct),
    ];
    let (mut client, mut sender) = (0, 0);
    for spec in &specs {
        let shows_client = matches!(lab.verdict(spec), crate::oracle::Verdict::Client { .. });
        lab.exercise(spec).context(format!(
            "{step}: {:?} {} {}",
            spec.source,
            spec.source_ip(),
            spec.listener.name()
        ))?;
        if shows_client {
            client += 1;
        } else {
            sender += 1;
        }
    }
    Ok((client, sender))
}

/// Writes `list` to the parameter, checks it reads back and that the kernel
/// logged the change; the lab's model follows.
fn set_list(lab: &Lab, list: &str) -> Result<()> {
    let mut log = Cursor::at_end()?;
    system::write_param(PARAM, list).map_err(|e| lab_err!("writing {list:?} to {PARAM}: {e}"))?;
    let now = system::read_param(PARAM)?;
    if now != list {
        return Err(lab_err!("{PARAM} reads {now:?} after writing {list:?}"));
    }
    let said = log.read_new()?;
    if !said.iter().any(|l| l.contains("trusted_proxies")) {
        return Err(lab_err!(
            "no kernel message after setting trusted_proxies={list:?}: {said:?}"
        ));
    }
    lab.set_trusted_model(Trusted::parse(list)?);
    Ok(())
}

/// Whether the kernel log lines name a refused trusted_proxies value.
fn rejection_logged(said: &[String]) -> bool {
    said.iter()
        .any(|l| l.contains("trusted_proxies") && l.contains("rejected"))
}

/// The run-time scenario: set, use, change, refuse, clear.
pub fn runtime(lab: &Lab) -> Result<String> {
    let start = system::read_param(PARAM)?;
    if lab.trusted().is_everyone() && !start.is_empty() {
        return Err(lab_err!(
            "{PARAM} reads {start:?}, expected it empty at load"
        ));
    }
    let outcome = (|| {
        set_list(lab, PROXIES)?;
        let (c1, s1) = probe(lab, &format!("trusted_proxies={PROXIES}"))?;
        if (c1, s1) != (3, 4) {
            return Err(lab_err!(
                "with {PROXIES}: {c1} TOA clients shown, expected 3"
            ));
        }
        set_list(lab, SUBNET_V4)?;
        let (c2, s2) = probe(lab, &format!("trusted_proxies={SUBNET_V4}"))?;
        for bad in INVALID {
            super::params::refused_write(PARAM, "trusted_proxies", bad, SUBNET_V4)?;
        }
        let (c3, s3) = probe(lab, "after the refused writes")?;
        if (c3, s3) != (c2, s2) {
            return Err(lab_err!("the refused writes changed what the list allows"));
        }
        Ok(format!(
            "{PROXIES}: {c1} proxy TOAs shown, {s1} direct connections kept their address; \
             {SUBNET_V4}: {c2} shown, {s2} kept; {} invalid lists refused with EINVAL and a kernel message, {SUBNET_V4} still in force",
            INVALID.len()
        ))
    })();
    // Leave the module as it was found, whatever happened.
    let restored = set_list(lab, &start).context("restoring trusted_proxies");
    let detail = outcome?;
    restored?;
    let (c4, _) = probe(lab, "list cleared")?;
    if start.is_empty() && c4 != 6 {
        return Err(lab_err!(
            "with the list cleared only {c4} of 6 TOAs were honoured"
        ));
    }
    Ok(format!("{detail}; cleared: every TOA honoured again"))
}

/// The load-time scenario: invalid lists make insmod fail, a valid one works
/// from the first connection. The module is left loaded as the run began.
pub fn at_load(lab: &Lab, ctx: &Shared) -> Result<String> {
    let module = ctx
        .module
        .clone()
        .ok_or_else(|| lab_err!("no --module path to load"))?;
    let others: Vec<String> = ctx
        .module_params
        .iter()
        .filter(|p| !p.starts_with("trusted_proxies="))
        .cloned()
        .collect();
    let with_list = |list: &str| {
        let mut p = others.clone();
        p.push(format!("trusted_proxies={list}"));
        p
    };
    system::run("rmmod", &[MODULE_NAME])?;
    let outcome = (|| {
        for bad in INVALID_AT_LOAD {
            let mut log = Cursor::at_end()?;
            match system::insmod(&module, &with_list(bad)) {
                Ok(()) => return Err(lab_err!("insmod with trusted_proxies={bad} succeeded")),
                Err(e) if e.to_string().contains("Invalid argument") => {}
                Err(e) => return Err(lab_err!("{e}; expected Invalid argument (EINVAL)")),
            }
            if system::module_loaded(MODULE_NAME) {
                return Err(lab_err!(
                    "the module stayed loaded after trusted_proxies={bad}"
                ));
            }
            let said = log.read_new()?;
            if !rejection_logged(&said) {
                return Err(lab_err!(
                    "insmod trusted_proxies={bad} failed but the kernel said nothing about it: {said:?}"
                ));
            }
        }
        system::insmod(&module, &with_list(PROXIES))?;
        lab.origin.relisten(lab.step_timeout)?;
        let now = system::read_param(PARAM)?;
        if now != PROXIES {
            return Err(lab_err!(
                "{PARAM} reads {now:?} after insmod with {PROXIES}"
            ));
        }
        lab.set_trusted_model(Trusted::parse(PROXIES)?);
        counted(lab, || {
            let (c, s) = probe(lab, &format!("loaded with trusted_proxies={PROXIES}"))?;
            if c != 3 {
                return Err(lab_err!("{c} TOA clients shown, expected 3"));
            }
            Ok(format!(
                "insmod refused {}; loaded with {PROXIES}: {c} proxy TOAs shown, {s} direct connections kept their address",
                INVALID_AT_LOAD.join(" and ")
            ))
        })
    })();
    // Back to the first load's parameters.
    let mut log = Cursor::at_end()?;
    let _ = system::run("rmmod", &[MODULE_NAME]);
    let restored = system::insmod(&module, &ctx.module_params)
        .and_then(|()| lab.origin.relisten(lab.step_timeout));
    let first = ctx.param("trusted_proxies").unwrap_or("");
    lab.set_trusted_model(Trusted::parse(first)?);
    let detail = outcome?;
    restored.context("loading the module again as the run began")?;
    if first.trim().is_empty() {
        let said = log.read_new()?;
        let notes = said
            .iter()
            .filter(|l| l.contains("trusted_proxies") && l.contains("not set"))
            .count();
        if notes != 1 {
            return Err(lab_err!(
                "loading without trusted_proxies logged {notes} 'not set' notes, expected one: {said:?}"
            ));
        }
        return Ok(format!(
            "{detail}; reloaded without a list: one 'not set' note in the kernel log"
        ));
    }
    Ok(detail)
}
