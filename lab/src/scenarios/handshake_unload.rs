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
    // rmmod spins on CPU 0 during its hold; everything of the lab (its TUN
    // pump, the origin) runs elsewhere, so no thread of the handshake waits
    // on a runqueue that the hold keeps busy.
    let placed = cpus::keep_off_cpu0();
    let outcome = (|| -> Result<String> {
        placed?;
        let mut rmmod = cpus::on_cpu0(Command::new("rmmod").arg(MODULE_NAME))
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
    cpus::release();
    outcome
}

/// CPU placement for the holds (sched_setaffinity on every thread).
mod cpus {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use crate::error::{lab_err, Result};

    fn set(tid: libc::pid_t, cpus: impl Iterator<Item = usize>) -> std::io::Result<()> {
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays inside it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in cpus {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: the set is a live cpu_set_t of the size given.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn online() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Every thread of this process to the CPUs but 0.
    pub fn keep_off_cpu0() -> Result<()> {
        let n = online();
        if n < 2 {
            return Err(lab_err!("the holds need two CPUs, the guest has {n}"));
        }
        every_thread(|tid| set(tid, 1..n))
    }

    /// Every thread of this process back on every CPU.
    pub fn release() {
        let n = online();
        let _ = every_thread(|tid| set(tid, 0..n));
    }

    fn every_thread(f: impl Fn(libc::pid_t) -> std::io::Result<()>) -> Result<()> {
        let tasks =
            std::fs::read_dir("/proc/self/task").map_err(|e| lab_err!("/proc/self/task: {e}"))?;
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            f(tid).map_err(|e| lab_err!("sched_setaffinity({tid}): {e}"))?;
        }
        Ok(())
    }

    /// `command`, started on CPU 0 only.
    pub fn on_cpu0(command: &mut Command) -> &mut Command {
        // SAFETY: sched_setaffinity is async-signal-safe.
        unsafe { command.pre_exec(|| set(0, std::iter::once(0))) }
    }
}
