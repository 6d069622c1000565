//! Scenarios of the eBPF mode alone: settings changed by loading again (the
//! pinned maps are updated in place, nothing is detached), in-kernel servers
//! left alone, an upgrade from the previous release with a TOA connection
//! open, and unloading with one open.

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

pub const SCENARIOS: [(&str, Run); 5] = [
    ("bpf-trusted-proxies", trusted_proxies),
    ("bpf-ports", ports),
    ("bpf-kernel-socket", kernel_socket),
    ("bpf-upgrade", upgrade),
    ("bpf-unload-open", unload_open),
];

/// The previous release's `toa` in the guest image (xtask builds it from
/// the commit operators run today, see xtask's previous_release).
const PREVIOUS: &str = "/bin/toa-previous";

/// Runs the operator's `toa` command; its output goes into the error when it fails.
pub fn loader(path: &Path, args: &[&str]) -> Result<String> {
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

/// A counter's total in `toa stats` table output.
fn counter(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
    })
}

fn toa(client: &str) -> Option<Toa> {
    Some(Toa::new(KIND_TOA, client.parse().expect("valid address")))
}

/// Back to the defaults the run started with, whatever the scenario did.
fn restore(lab: &Lab, path: &Path) -> Result<()> {
    loader(path, &["bpf", "load"])?;
    lab.set_trusted_model(Trusted::everyone());
    lab.set_ports_model(None);
    Ok(())
}

fn trusted_proxies(lab: &Lab, path: &Path) -> Result<String> {
    let outcome = (|| {
        loader(path, &["bpf", "load", "--trusted-proxies", PROXIES])?;
        lab.set_trusted_model(Trusted::parse(PROXIES)?);
        let (c1, s1) = probe(lab, &format!("trusted {PROXIES}"))?;
        let none = "192.0.2.0/24,2001:db8:ffff::/48";
        loader(path, &["bpf", "load", "--trusted-proxies", none])?;
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
        loader(path, &["bpf", "load", "--ports", &only.to_string()])?;
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

/// An in-kernel server's listener (a socket the kernel made for itself, in
/// the cgroup the programs are attached to) is left alone, as toa.ko leaves
/// it: its kernel_getpeername() shows the connection's own source, no client
/// is taken from the handshake, and only syn_recv_sock_kernel_socket moves.
fn kernel_socket(lab: &Lab, path: &Path) -> Result<String> {
    let read = |what: &str| -> Result<Vec<(String, u64)>> {
        let table =
            loader(path, &["stats", "--interval", "0"]).context(format!("toa stats {what}"))?;
        Ok(table
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect())
    };
    let before = read("before")?;
    let (client, seen) = super::kernel_socket::accept_one_with(lab, "198.51.100.42:40042")?;
    let after = read("after")?;
    let moved: Vec<String> = after
        .iter()
        .filter_map(|(name, v)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v);
            (*v != was).then(|| format!("{name}{:+}", i128::from(*v) - i128::from(was)))
        })
        .collect();
    if moved != ["syn_recv_sock_kernel_socket+1"] {
        return Err(lab_err!(
            "counters: expected syn_recv_sock_kernel_socket+1 and nothing else, saw [{}]",
            moved.join(" ")
        ));
    }
    Ok(format!(
        "TOA with client {client} to an in-kernel listener: it saw [{seen}]; syn_recv_sock_kernel_socket+1, nothing else moved"
    ))
}

/// An upgrade from the previous release's `toa` to this one with a TOA
/// connection open: this release's programs replace the previous ones in
/// place, with the pinned socket storage, so the open connection keeps its
/// client; `toa status` shows the previous object before and this binary's
/// after; new connections get their client.
fn upgrade(lab: &Lab, path: &Path) -> Result<String> {
    let previous = Path::new(PREVIOUS);
    if !previous.exists() {
        return Err(lab_err!("{PREVIOUS} is not in the guest image"));
    }
    loader(path, &["bpf", "unload"])?;
    let outcome = (|| {
        loader(previous, &["bpf", "load"]).context("loading the previous release's toa")?;
        let status = loader(path, &["status", "--sample", "0.2"]).unwrap_or_else(|e| e.to_string());
        let before = line_of(&status, "object ");
        if !before.contains("this binary is toa") {
            return Err(lab_err!(
                "with the previous release loaded, toa status should name another object than \
                 this binary's; it said [{before}]"
            ));
        }
        let client = "198.51.100.9:40400";
        let spec = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa(client));
        let super::Kept {
            client: conn, fd, ..
        } = super::open_kept(lab, &spec, "the upgrade")?;
        let kept = (|| {
            let said = loader(path, &["bpf", "load"]).context("upgrading to this release's toa")?;
            if !said.contains("replaced in place") {
                return Err(lab_err!(
                    "the upgrade did not replace the programs in place: [{}]",
                    said.replace('\n', "; ")
                ));
            }
            let seen =
                peer_of(&fd).context("getpeername on the kept connection after the upgrade")?;
            let want = PeerName::v4(client.parse().expect("valid address"));
            if seen != want {
                return Err(lab_err!(
                    "after the upgrade the kept connection showed [{seen}], expected its client [{want}]"
                ));
            }
            Ok(said.lines().next().unwrap_or_default().to_string())
        })();
        drop(fd);
        let closed = conn.close().context("closing the kept connection");
        let said = kept?;
        closed?;
        let status = loader(path, &["status", "--sample", "0.2"])?;
        let after = line_of(&status, "object ");
        if !after.contains("this binary's") {
            return Err(lab_err!(
                "after the upgrade toa status should show this binary's object; it said [{after}]"
            ));
        }
        let fresh = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.9:40401"));
        let detail = lab
            .exercise(&fresh)
            .context("a new connection after the upgrade")?;
        Ok(format!(
            "kept connection showed {client} across [{said}]; status [{after}]; new connection {detail}"
        ))
    })();
    restore(lab, path)?;
    outcome
}

/// The first line of `text` that starts (after spaces) with `key`.
fn line_of(text: &str, key: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(key))
        .unwrap_or("(no such line)")
        .to_string()
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
        let status = loader(path, &["stats", "--interval", "0"])?;
        let toa_count = counter(&status, "syn_recv_sock_toa").unwrap_or(0);
        if toa_count == 0 {
            return Err(lab_err!("status shows no TOA handshake counted: {status}"));
        }
        loader(path, &["bpf", "unload"])?;
        let seen = peer_of(&fd).context("getpeername on the kept connection after unload");
        let after = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.7:40307"));
        let unloaded = lab.open(&after).and_then(|h| {
            let local = h.client.local();
            h.client.close().context("closing")?;
            lab.verify(&after, Verdict::Kernel(Kept::NoToa), local, &h.report)
        });
        loader(path, &["bpf", "load"])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_stats_table() {
        let table = "counter                            total   per second   (sum over 2 CPUs)\n\
                     syn_recv_sock_toa                      7            -\n\
                     syn_recv_sock_no_toa                  12            -\n";
        assert_eq!(counter(table, "syn_recv_sock_toa"), Some(7));
        assert_eq!(counter(table, "syn_recv_sock"), None);
        assert_eq!(counter("", "syn_recv_sock_toa"), None);
    }
}
