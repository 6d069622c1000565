//! The test-only `toa_lab_hooks` module (`lab/kmod/toa_lab_hooks.c`): what
//! another module or a stalled CPU can do to toa.ko, on demand. The attack
//! scenarios load it, give it one command at a time and read back what
//! happened, with the times of the delays so they can check that the
//! windows they meant to overlap did.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{lab_err, Context, Result};
use crate::system;

const MODULE: &str = "/lib/modules/toa_lab_hooks.ko";
const MODULE_NAME: &str = "toa_lab_hooks";
const PROC: &str = "/proc/toa_lab_hooks";

/// The module, loaded; it stays loaded for the rest of the run (sockets
/// may hold its destructor until they close).
pub struct Hooks;

impl Hooks {
    pub fn load() -> Result<Hooks> {
        if !system::module_loaded(MODULE_NAME) {
            if !Path::new(MODULE).exists() {
                return Err(lab_err!("{MODULE} is not in the guest image"));
            }
            system::insmod(Path::new(MODULE), &[])?;
        }
        Ok(Hooks)
    }

    fn command(&self, line: &str) -> Result<()> {
        std::fs::write(PROC, line).map_err(|e| lab_err!("{PROC}: '{line}': {e}"))
    }

    /// Chains a destructor of the hooks module after the one `fd`'s socket has.
    pub fn chain(&self, fd: BorrowedFd<'_>) -> Result<()> {
        self.command(&format!("chain {}", fd.as_raw_fd()))
    }

    /// The next record toa.ko makes for a connection to `port` waits `ms` first.
    pub fn delay_insert(&self, port: u16, ms: u32) -> Result<()> {
        self.command(&format!("delay-insert {port} {ms}"))
    }

    /// The next rmmod spins `ms` once toa's exit has unregistered its probe.
    pub fn delay_exit(&self, ms: u32) -> Result<()> {
        self.command(&format!("delay-exit {ms}"))
    }

    /// Task `tid`'s next call of kernel function `function` spins `ms` at entry.
    pub fn delay_task(&self, function: &str, tid: i32, ms: u32) -> Result<()> {
        self.command(&format!("delay-task {function} {tid} {ms}"))
    }

    /// Removes every probe (a reloaded toa.ko is not probed anyway).
    pub fn clear(&self) -> Result<()> {
        self.command("clear")
    }

    pub fn state(&self) -> Result<State> {
        let text = std::fs::read_to_string(PROC).context(format!("reading {PROC}"))?;
        State::parse(&text).ok_or_else(|| lab_err!("{PROC} reads {text:?}"))
    }

    /// Polls until `ready` holds, for up to `limit`.
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        ready: impl Fn(&State) -> bool,
    ) -> Result<State> {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.state()?;
            if ready(&state) {
                return Ok(state);
            }
            if Instant::now() > deadline {
                return Err(lab_err!(
                    "{what} did not happen within {limit:?} ({state:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One read of the module's state.
#[derive(Debug, Clone, Default)]
pub struct State {
    values: HashMap<String, u64>,
}

impl State {
    fn parse(text: &str) -> Option<State> {
        let mut values = HashMap::new();
        for pair in text.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            values.insert(k.to_string(), v.parse().ok()?);
        }
        values.contains_key("now").then_some(State { values })
    }

    pub fn get(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// A delay's window: (began, ended), 0 for "not yet".
    pub fn window(&self, delay: &str) -> (u64, u64) {
        (
            self.get(&format!("{delay}_begin")),
            self.get(&format!("{delay}_end")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_state_parses_the_module_line() {
        let s = State::parse(
            "chained_open=1 chain_called=0 insert_done=1 insert_begin=10 insert_end=20 exit_done=0 exit_begin=0 exit_end=0 task_done=0 task_begin=0 task_end=0 now=30\n",
        )
        .unwrap();
        assert_eq!(s.get("chained_open"), 1);
        assert_eq!(s.window("insert"), (10, 20));
        assert_eq!(s.window("exit"), (0, 0));
        assert!(State::parse("garbage").is_none());
        assert!(State::parse("chained_open=1").is_none());
    }
}
