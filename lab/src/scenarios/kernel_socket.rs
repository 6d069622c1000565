//! A kernel socket: an in-kernel server (the test-only `toa_kernel_listener`
//! module, shaped like the iSCSI target) accepts a connection whose TOA
//! carries an IPv6 client and asks for its peer with a 16-byte sockaddr_in
//! between guard bytes. toa.ko must leave kernel sockets alone: the answer is
//! the kernel's (the proxy), the guards are intact, and no TOA counter moves
//! but `listen_kernel_socket`. The eBPF mode runs the same connection with
//! an IPv4 client, which its getpeername programs could show on that socket
//! (bpf::kernel_socket): it must leave it alone too.

use std::path::Path;
use std::time::Instant;

use crate::error::{lab_err, Context, Result};
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::stats::{self, Snapshot};
use crate::system;
use crate::toa_option::{Toa, KIND_TOA};

const MODULE: &str = "/lib/modules/toa_kernel_listener.ko";
const MODULE_NAME: &str = "toa_kernel_listener";
const PROC: &str = "/proc/toa_kernel_listener";
const PORT: u16 = 8090;

/// Counters that must not move: the kernel's listener is never taken over.
const STILL: &[&str] = &[
    "syn_recv_sock_toa",
    "syn_recv_sock_no_toa",
    "getname_toa_ok",
    "getname_toa_empty",
    "getname_toa_mismatch",
    "getname_kernel_socket",
    "getname_toa_unfit",
    "listen_armed",
];

fn moved(before: &Snapshot, after: &Snapshot, name: &str) -> i128 {
    i128::from(after.get(name).unwrap_or(0)) - i128::from(before.get(name).unwrap_or(0))
}

pub fn run(lab: &Lab) -> Result<String> {
    let before = stats::read()?;
    let (client, seen) = accept_one(lab)?;
    let after = stats::read()?;
    let wrong: Vec<String> = STILL
        .iter()
        .filter(|n| moved(&before, &after, n) != 0)
        .map(|n| format!("{n}{:+}", moved(&before, &after, n)))
        .collect();
    if !wrong.is_empty() || moved(&before, &after, "listen_kernel_socket") != 1 {
        return Err(lab_err!(
            "counters: expected listen_kernel_socket+1 and nothing else, saw listen_kernel_socket{:+} {}",
            moved(&before, &after, "listen_kernel_socket"),
            wrong.join(" ")
        ));
    }
    Ok(format!(
        "TOA with client {client} to an in-kernel listener: it saw [{seen}]; listen_kernel_socket+1, no TOA counter moved"
    ))
}

/// Loads the in-kernel listener, sends it one connection whose TOA carries
/// `client`, and checks the peer it was given is the connection's real
/// source with its guard bytes intact. Returns the client and what the
/// listener reported.
pub fn accept_one_with(lab: &Lab, client: &str) -> Result<(String, String)> {
    if !Path::new(MODULE).exists() {
        return Err(lab_err!("{MODULE} is not in the guest image"));
    }
    system::insmod(Path::new(MODULE), &[format!("port={PORT}")])?;
    let outcome = (|| {
        let spec = ConnSpec::new(
            ProxyFamily::V4,
            Listener::V4,
            Some(Toa::new(KIND_TOA, client.parse().expect("valid address"))),
        );
        let conn = lab
            .connect_to(&spec, PORT)
            .context(format!("connecting to the kernel listener on :{PORT}"))?;
        let source = conn.local();
        let deadline = Instant::now() + lab.step_timeout;
        let seen = loop {
            let text = std::fs::read_to_string(PROC).context(format!("reading {PROC}"))?;
            if text.starts_with("accepted=") {
                break text.trim_end().to_string();
            }
            if Instant::now() > deadline {
                return Err(lab_err!(
                    "the kernel listener accepted nothing: {PROC} reads {text:?}"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        conn.close()
            .context("closing the connection to the kernel listener")?;
        let want = format!(
            "accepted=1 peer={}:{} len=16 guards=intact",
            source.ip(),
            source.port()
        );
        if seen != want {
            return Err(lab_err!(
                "the kernel listener saw [{seen}], expected [{want}] (the connection's own source: kernel sockets are left alone)"
            ));
        }
        Ok((client.to_string(), seen))
    })();
    let unloaded = system::run("rmmod", &[MODULE_NAME]);
    let done = outcome?;
    unloaded?;
    Ok(done)
}

/// The module's case: an IPv6 client, which an AF_INET kernel socket asking
/// with a 16-byte buffer could not even hold.
fn accept_one(lab: &Lab) -> Result<(String, String)> {
    accept_one_with(lab, "[2001:db8::42]:40042")
}
