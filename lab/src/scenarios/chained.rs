//! chained-destructor: another module chains its own destructor after
//! toa's on a TOA connection (TLS device offload does this: it saves
//! `sk_destruct` and calls it from its own), then toa.ko is unloaded. The
//! saved pointer is toa_sk_destruct(): it is called when that socket closes,
//! whenever that is, and no unload can take it back. Unload must wait for
//! the socket to close (idle, saying so) instead of leaving a pointer into
//! freed code; the close then runs both destructors and rmmod completes.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use super::lab_hooks::Hooks;
use super::{attack_then_restore, loopback, open_kept, Kept, Shared, MODULE_NAME};
use crate::error::{lab_err, Context, Result};
use crate::lab::{peer_of, ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::sockaddr::PeerName;
use crate::toa_option::{Toa, KIND_TOA};

pub const NAME: &str = "chained-destructor";

/// How long rmmod is given to (wrongly) finish while the socket is open.
const HOLD: Duration = Duration::from_secs(2);
/// What toa.ko says while it waits (toa_table.c).
const WAIT_MESSAGE: &str = "unload waits for 1 sockets whose destructor another module chained";

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let (detail, said) = attack_then_restore(lab, ctx, attack)?;
    if !said.iter().any(|l| l.contains(WAIT_MESSAGE)) {
        return Err(lab_err!(
            "the kernel log does not say [{WAIT_MESSAGE}]: unload did not see the chained destructor"
        ));
    }
    Ok(format!(
        "{detail}; the kernel log said why rmmod waited, nothing else"
    ))
}

fn attack(lab: &Lab) -> Result<String> {
    let hooks = Hooks::load()?;
    let spec = ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        Some(Toa::new(
            KIND_TOA,
            "198.51.100.71:40710".parse().expect("valid"),
        )),
    );
    let Kept {
        client,
        fd,
        proxy_src,
    } = open_kept(lab, &spec, "a chained destructor")?;
    let before = hooks.state()?;
    let outcome = match hooks.chain(fd.as_fd()) {
        Ok(()) => unload_behind(lab, fd, proxy_src),
        Err(e) => Err(e),
    };
    let _ = client.close();
    let detail = outcome?;
    let after = hooks
        .wait_for(
            Duration::from_secs(2),
            "the chained destructor's call",
            |s| s.get("chain_called") > before.get("chain_called"),
        )
        .context("after the close")?;
    if after.get("chained_open") != before.get("chained_open") {
        return Err(lab_err!(
            "the hooks module still holds {} chained sockets",
            after.get("chained_open")
        ));
    }
    Ok(detail)
}

/// rmmod with the chained socket `fd` open; after `HOLD`, closes it.
fn unload_behind(lab: &Lab, fd: OwnedFd, proxy_src: SocketAddr) -> Result<String> {
    let mut rmmod = Command::new("rmmod")
        .arg(MODULE_NAME)
        .spawn()
        .context("starting rmmod")?;
    std::thread::sleep(HOLD);
    let early = rmmod.try_wait().context("rmmod")?;
    // Unload has put the kernel's table back: the kernel's own answer.
    let seen = peer_of(&fd);
    let closed_at = Instant::now();
    // Runs the chained destructor, which calls toa's.
    loopback::abort(fd)?;
    let status = rmmod.wait().context("waiting for rmmod")?;
    lab.set_module_loaded(false);
    if let Some(early) = early {
        return Err(lab_err!(
            "rmmod finished ({early}) while a socket whose destructor chains toa's was open: its close calls freed code"
        ));
    }
    if !status.success() {
        return Err(lab_err!(
            "rmmod failed ({status}) once the chained socket closed"
        ));
    }
    let seen = seen.context("getpeername while rmmod waited")?;
    let want = PeerName::v4(proxy_src);
    if seen != want {
        return Err(lab_err!(
            "getpeername while rmmod waited: expected the kernel's [{want}], saw [{seen}]"
        ));
    }
    Ok(format!(
        "rmmod still waiting after {:.1} s with the chained socket open (getpeername: the kernel's [{seen}]); closed it: rmmod completed {:.1} s later",
        HOLD.as_secs_f64(),
        closed_at.elapsed().as_secs_f64()
    ))
}
