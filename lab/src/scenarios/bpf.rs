//! Scenarios of the eBPF mode alone: settings changed by loading again (the
//! pinned maps are updated in place, nothing is detached) and unloading with
//! a TOA connection open.

use std::path::Path;
use std::process::Command;

use crate::error::{lab_err, Context, Result};
use crate::lab::{peer_of, ConnSpec, Lab, ProxyFamily};
use crate::oracle::{Kept, Verdict};
use crate::origin::Listener;
use crate::sockaddr::PeerName;
use crate::toa_option::{Toa, KIND_TOA};
use crate::trust::Trusted;

use super::trusted::{probe, PROXIES};

type Run = fn(&Lab, &Path) -> Result<String>;

pub const NAMES: &[&str] = &["bpf-trusted-proxies", "bpf-ports", "bpf-unload-open"];

pub const SCENARIOS: [(&str, Run); 3] = [
    ("bpf-trusted-proxies", trusted_proxies),
    ("bpf-ports", ports),
    ("bpf-unload-open", unload_open),
];

/// Runs the loader; its output goes into the error when it fails.
fn loader(path: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(path)
        .args(args)
        .output()
        .map_err(|e| lab_err!("running {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(lab_err!(
            "{} {} failed ({}): {}{}",
            path.display(),
            args.join(" "),
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text)
}

fn toa(client: &str) -> Option<Toa> {
    Some(Toa::new(KIND_TOA, client.parse().expect("valid address")))
}

/// Back to the defaults the run started with, whatever the scenario did.
fn restore(lab: &Lab, path: &Path) -> Result<()> {
    loader(path, &["load"])?;
    lab.set_trusted_model(Trusted::everyone());
    lab.set_ports_model(None);
    Ok(())
}

fn trusted_proxies(lab: &Lab, path: &Path) -> Result<String> {
    let outcome = (|| {
        loader(path, &["load", "--trusted-proxies", PROXIES])?;
        lab.set_trusted_model(Trusted::parse(PROXIES)?);
        let (c1, s1) = probe(lab, &format!("trusted {PROXIES}"))?;
        let none = "192.0.2.0/24,2001:db8:ffff::/48";
        loader(path, &["load", "--trusted-proxies", none])?;
        lab.set_trusted_model(Trusted::parse(none)?);
        let (c2, s2) = probe(lab, &format!("trusted {none}"))?;
        if c1 == 0 || s1 == 0 || c2 != 0 {
            return Err(lab_err!(
                "the lists did not split the probes: {c1}/{s1} then {c2}/{s2} client/sender"
            ));
        }
        Ok(format!(
            "loaded again in place: {PROXIES}: {c1} client {s1} sender; {none}: {s2} sender"
        ))
    })();
    restore(lab, path)?;
    outcome
}

fn ports(lab: &Lab, path: &Path) -> Result<String> {
    let outcome = (|| {
        let only = Listener::V6.port();
        loader(path, &["load", "--ports", &only.to_string()])?;
        lab.set_ports_model(Some(vec![only]));
        let other = lab
            .exercise(&ConnSpec::new(
                ProxyFamily::V4,
                Listener::V4,
                toa("198.51.100.20:40200"),
            ))
            .context("TOA to a port outside ports")?;
        let honoured = lab
            .exercise(&ConnSpec::new(
                ProxyFamily::V6,
                Listener::V6,
                toa("[2001:db8::20]:40201"),
            ))
            .context("TOA to the port in ports")?;
        Ok(format!(
            "ports={only}: other port {other}; honoured {honoured}"
        ))
    })();
    restore(lab, path)?;
    outcome
}

/// Unload with a TOA connection open: that socket gets the kernel's answer
/// again, so do new connections; loading again covers new ones at once.
fn unload_open(lab: &Lab, path: &Path) -> Result<String> {
    let kept = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.7:40306"));
    let super::Kept {
        client,
        fd,
        proxy_src,
    } = super::open_kept(lab, &kept, "unload")?;
    let outcome = (|| {
        let status = loader(path, &["status"])?;
        let toa_count = status
            .lines()
            .find_map(|l| l.strip_prefix("syn_recv_sock_toa: "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if toa_count == 0 {
            return Err(lab_err!("status shows no TOA handshake counted: {status}"));
        }
        loader(path, &["unload"])?;
        let seen = peer_of(&fd).context("getpeername on the kept connection after unload");
        let after = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.7:40307"));
        let unloaded = lab.open(&after).and_then(|h| {
            let local = h.client.local();
            h.client.close().context("closing")?;
            lab.verify(&after, Verdict::Kernel(Kept::NoToa), local, &h.report)
        });
        loader(path, &["load"])?;
        let seen = seen?;
        let want = PeerName::v4(proxy_src);
        if seen != want {
            return Err(lab_err!(
                "after unload, getpeername on the kept connection: expected the kernel's [{want}], saw [{seen}]"
            ));
        }
        let unloaded = unloaded.context("new connection while unloaded")?;
        let fresh = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.7:40308"));
        let detail = lab.exercise(&fresh).context("new connection after load")?;
        Ok(format!(
            "{toa_count} TOA handshakes counted; kept connection showed [{want}] after unload; \
             while unloaded {unloaded}; after load {detail}"
        ))
    })();
    drop(fd);
    let closed = client.close().context("closing the kept connection");
    let detail = outcome?;
    closed?;
    Ok(detail)
}
