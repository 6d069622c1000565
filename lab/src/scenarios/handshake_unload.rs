//! rmmod-during-handshake: a TOA handshake is inside toa.ko's code, about
//! to make its record, while rmmod puts the tables back and releases every
//! record's socket. A record made after that release would leave the
//! socket's destructor pointing into the freed module: the close after the
//! unload calls freed code. The window is made wide with the test-only hooks
//! module: rmmod is held right after toa's exit unregistered its probe
//! (before anything is put back), the handshake is held just before the
//! record is made, and the two holds are checked to overlap, so the record
//! comes after the release every time. Unload must refuse that record: the
//! connection gets the kernel's answer, its close after the unload is quiet,
//! and the module loads again.

use std::process::Command;
use std::time::Duration;

use super::lab_hooks::Hooks;
use super::{attack_then_restore, loopback, Shared, MODULE_NAME};
use crate::error::{lab_err, Context, Result};
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::sockaddr::PeerName;
use crate::toa_option::{Toa, KIND_TOA};

pub const NAME: &str = "rmmod-during-handshake";

/// The scenario's own listener (others use 8090-8096).
const PORT: u16 = 8097;
/// rmmod is held this long after toa's exit unregistered its probe: the
/// handshake has to reach the record within it.
const EXIT_HOLD_MS: u32 = 2000;
/// The handshake is held this long before its record: past the end of the
/// exit hold, so the release runs while it waits.
const INSERT_HOLD_MS: u32 = 3000;

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let (detail, _) = attack_then_restore(lab, ctx, attack)?;
    let fresh = ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        Some(Toa::new(
            KIND_TOA,
            "198.51.100.81:40811".parse().expect("valid"),
        )),
    );
    let shown = lab
        .exercise(&fresh)
        .context("a new TOA connection after insmod")?;
    Ok(format!(
        "{detail}; insmod again: new TOA connection {shown}"
    ))
}

fn attack(lab: &Lab) -> Result<String> {
    let hooks = Hooks::load()?;
    let own = loopback::wildcard_v4(PORT, "the scenario's listener :8097")?;
    let spec = ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        Some(Toa::new(
            KIND_TOA,
            "198.51.100.80:40800".parse().expect("valid"),
        )),
    );
    hooks.delay_insert(PORT, INSERT_HOLD_MS)?;
    hooks.delay_exit(EXIT_HOLD_MS)?;
    let outcome = (|| -> Result<String> {
        let mut rmmod = Command::new("rmmod")
            .arg(MODULE_NAME)
            .spawn()
            .context("starting rmmod")?;
        let held = hooks.wait_for(
            Duration::from_secs(20),
            "rmmod reaching the hold after toa's probe was unregistered",
            |st| st.window("exit").0 != 0,
        );
        // The handshake; its last packet may be processed (and held) inside
        // this thread's write to the TUN device.
        let conn = held.and_then(|_| {
            lab.connect_to(&spec, PORT)
                .context(format!("TOA connection to :{PORT}"))
        });
        let status = rmmod.wait().context("waiting for rmmod")?;
        lab.set_module_loaded(false);
        let conn = conn?;
        let proxy_src = conn.local();
        if !status.success() {
            return Err(lab_err!("rmmod failed ({status})"));
        }
        let st = hooks.state()?;
        let (exit_begin, exit_end) = st.window("exit");
        let (insert_begin, insert_end) = st.window("insert");
        if !(exit_begin < insert_begin && insert_begin < exit_end && exit_end < insert_end) {
            return Err(lab_err!(
                "the holds did not overlap as meant (rmmod {exit_begin}..{exit_end}, handshake {insert_begin}..{insert_end} ns): nothing was tested"
            ));
        }
        let (fd, accepted) = loopback::accept(&own, lab.step_timeout)
            .context("accepting the connection whose handshake raced rmmod")?;
        let want = PeerName::v4(proxy_src);
        let seen = crate::lab::peer_of(&fd);
        // The socket's destructor runs now: toa's, if a record was made.
        loopback::abort(fd)?;
        let _ = conn.close();
        let seen = seen.context("getpeername after the unload")?;
        if accepted != want || seen != want {
            return Err(lab_err!(
                "after the unload, accept() showed [{accepted}] and getpeername [{seen}], expected the kernel's [{want}]"
            ));
        }
        Ok(format!(
            "rmmod held {} ms after toa's probe went; the handshake reached toa's record {} ms into that hold and made it {} ms after the hold, past the release; rmmod completed, accept() and getpeername showed the kernel's [{want}], closed after the unload",
            (exit_end - exit_begin) / 1_000_000,
            (insert_begin - exit_begin) / 1_000_000,
            (insert_end - exit_end) / 1_000_000
        ))
    })();
    let _ = hooks.clear();
    outcome
}
