//! Booting a kernel + initramfs under QEMU, with the serial console captured
//! to a log file, streamed as progress, and bounded by a timeout.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::distro::arch::Arch;

pub const QEMU: &str = "qemu-system-x86_64";
/// The emulator of arm64 guests (Debian package qemu-system-arm).
pub const QEMU_AARCH64: &str = "qemu-system-aarch64";

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Emulation: works everywhere, slow.
    Tcg,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// The emulator binary of `arch` guests.
pub fn emulator(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => QEMU,
        Arch::Aarch64 => QEMU_AARCH64,
    }
}

/// TCG unless KVM was asked for (`want_kvm`, or `TOA_KVM=1`) and /dev/kvm can be opened.
pub fn choose_accel(want_kvm: bool) -> Accel {
    let env = std::env::var("TOA_KVM").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !(want_kvm || env) {
        return Accel::Tcg;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Accel::Kvm,
        Err(err) => {
            eprintln!("note: KVM requested but /dev/kvm is not usable ({err}); using TCG");
            Accel::Tcg
        }
    }
}

/// One boot.
#[derive(Debug, Clone)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line added after the lab's defaults.
    pub append: String,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// Run every vCPU in one TCG thread. Multi-threaded TCG can keep
    /// executing a stale translation of code another vCPU just patched
    /// (a kprobe's int3 being removed), which real CPUs never do; runs that
    /// patch kernel text under load need the coherent single-thread mode.
    pub tcg_single_thread: bool,
    pub timeout: Duration,
    /// The serial console is written here as it arrives.
    pub console_log: PathBuf,
    /// Give up early when QEMU prints nothing at all for this long (a
    /// guest that never starts, as with KVM where it does not work).
    pub silence_timeout: Option<Duration>,
    /// Extra QEMU arguments (e.g. `-icount shift=0,sleep=off`).
    pub extra_args: Vec<String>,
    /// The emulator binary ([`QEMU`] unless `TOA_QEMU` names another); a
    /// bare name is looked up on PATH.
    pub qemu: std::ffi::OsString,
    /// The guest's architecture (see [`Boot::set_arch`]).
    pub arch: Arch,
}

impl Boot {
    pub fn new(kernel: &Path, initrd: &Path, console_log: &Path) -> Boot {
        Boot {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: String::new(),
            memory_mb: 1024,
            cpus: 2,
            accel: Accel::Tcg,
            tcg_single_thread: false,
            timeout: Duration::from_secs(300),
            console_log: console_log.to_path_buf(),
            silence_timeout: None,
            extra_args: Vec::new(),
            qemu: std::env::var_os("TOA_QEMU").unwrap_or_else(|| QEMU.into()),
            arch: Arch::X86_64,
        }
    }

    /// Boots an `arch` guest: its emulator (unless `TOA_QEMU` names one),
    /// machine and console. arm64 runs on `-M virt`, whose console is the
    /// PL011 UART (ttyAMA0); `pauth-impdef=on` makes TCG's pointer
    /// authentication cheap (~1.6 s to the shell instead of 6.6 s).
    pub fn set_arch(&mut self, arch: Arch) {
        self.arch = arch;
        if std::env::var_os("TOA_QEMU").is_none() {
            self.qemu = emulator(arch).into();
        }
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        // panic=-1 + oops=panic + -no-reboot: an oops ends the run at once.
        let console = match self.arch {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        };
        let mut line = format!("console={console} panic=-1 oops=panic rdinit=/init");
        if !self.append.trim().is_empty() {
            line.push(' ');
            line.push_str(self.append.trim());
        }
        line
    }

    /// QEMU's arguments.
    pub fn args(&self) -> Vec<String> {
        let accel = match self.accel {
            Accel::Tcg if self.tcg_single_thread => "tcg,thread=single",
            other => other.name(),
        };
        let (machine, cpu) = match self.arch {
            Arch::X86_64 => ("q35", "max"),
            Arch::Aarch64 => ("virt", "max,pauth-impdef=on"),
        };
        let mut args: Vec<String> = [
            "-machine",
            machine,
            "-cpu",
            cpu,
            "-accel",
            accel,
            "-m",
            &self.memory_mb.to_string(),
            "-smp",
            &self.cpus.to_string(),
            // No default NIC, VGA or drives: nothing the lab uses, less to boot.
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["-kernel".into(), self.kernel.display().to_string()]);
        args.extend(["-initrd".into(), self.initrd.display().to_string()]);
        args.extend(["-append".into(), self.cmdline()]);
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// What a boot printed and how it ended.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// The whole serial console (also in `console_log`).
    pub console: String,
    pub console_log: PathBuf,
    /// QEMU was killed at the timeout.
    pub timed_out: bool,
    /// QEMU was killed because it printed nothing within `silence_timeout`.
    pub silent: bool,
    pub timeout: Duration,
    /// QEMU's exit code, if it exited by itself.
    pub exit_code: Option<i32>,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
    /// From QEMU's start to the first line containing `TOA-LAB` (init running).
    pub to_init: Option<Duration>,
}

impl BootOutcome {
    /// Why the boot did not end by itself, if it did not.
    pub fn failure(&self) -> Option<String> {
        if self.silent {
            return Some(format!(
                "QEMU printed nothing in {} s and was stopped; console log: {}",
                self.elapsed.as_secs(),
                self.console_log.display()
            ));
        }
        if self.timed_out {
            return Some(format!(
                "timed out after {} s; console log: {}",
                self.timeout.as_secs(),
                self.console_log.display()
            ));
        }
        match self.exit_code {
            Some(0) => None,
            Some(code) => Some(format!(
                "QEMU exited with status {code}; console log: {}",
                self.console_log.display()
            )),
            None => Some(format!(
                "QEMU was killed by a signal; console log: {}",
                self.console_log.display()
            )),
        }
    }
}

/// Boot, stream progress, and return the console once QEMU exits or the timeout kills it.
pub fn boot(b: &Boot) -> Result<BootOutcome> {
    if b.qemu == QEMU {
        crate::host::ensure_tools(&[(QEMU, "qemu-system-x86")])?;
    }
    if b.qemu == QEMU_AARCH64 {
        crate::host::ensure_tools(&[(QEMU_AARCH64, "qemu-system-arm")])?;
    }
    if let Some(dir) = b.console_log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut log = std::fs::File::create(&b.console_log)
        .with_context(|| format!("creating {}", b.console_log.display()))?;
    eprintln!(
        "booting {} under {} ({}; timeout {} s)",
        b.kernel.display(),
        b.qemu.to_string_lossy(),
        b.accel.name(),
        b.timeout.as_secs()
    );
    let started = Instant::now();
    let handle = Arc::new(
        duct::cmd(&b.qemu, b.args())
            .stdin_null()
            .stderr_to_stdout()
            .unchecked()
            .reader()
            .with_context(|| format!("starting {}", b.qemu.to_string_lossy()))?,
    );

    // Reader thread: raw console bytes -> channel of complete lines.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match (&*handle).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };

    let spinner = Progress::new();
    let mut console: Vec<u8> = Vec::new();
    let mut line_start = 0usize;
    let mut to_init = None;
    let mut timed_out = false;
    let mut silent = false;
    let deadline = started + b.timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            let _ = handle.kill();
            break;
        }
        if console.is_empty()
            && b.silence_timeout
                .is_some_and(|limit| now - started >= limit)
        {
            silent = true;
            let _ = handle.kill();
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(250))) {
            Ok(chunk) => {
                log.write_all(&chunk)
                    .with_context(|| format!("writing {}", b.console_log.display()))?;
                console.extend_from_slice(&chunk);
                while let Some(pos) = console[line_start..].iter().position(|&c| c == b'\n') {
                    let line = String::from_utf8_lossy(&console[line_start..line_start + pos]);
                    let line = line.trim_end_matches('\r');
                    if let Some(at) = line.find("TOA-LAB ") {
                        to_init.get_or_insert_with(|| started.elapsed());
                        spinner.line(&line[at..]);
                    }
                    line_start += pos + 1;
                }
                spinner.tick(started.elapsed());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => spinner.tick(started.elapsed()),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // After a kill, drain what was already read.
    let _ = reader.join();
    while let Ok(chunk) = rx.try_recv() {
        let _ = log.write_all(&chunk);
        console.extend_from_slice(&chunk);
    }
    log.flush()?;
    let elapsed = started.elapsed();
    spinner.finish();
    let exit_code = if timed_out || silent {
        None
    } else {
        match handle.try_wait() {
            Ok(Some(output)) => output.status.code(),
            _ => None,
        }
    };
    Ok(BootOutcome {
        console: String::from_utf8_lossy(&console).replace("\r\n", "\n"),
        console_log: b.console_log.clone(),
        timed_out,
        silent,
        timeout: b.timeout,
        exit_code,
        elapsed,
        to_init,
    })
}

/// A spinner with the last `TOA-LAB` line on a terminal; plain lines otherwise,
/// and one at least every [`crate::progress::EVERY`] while the guest says
/// nothing (a boot under TCG, a long scenario).
struct Progress {
    bar: Option<ProgressBar>,
    /// When the last plain line was printed.
    printed: std::cell::Cell<Instant>,
}

impl Progress {
    fn new() -> Progress {
        let printed = std::cell::Cell::new(Instant::now());
        if crate::progress::plain() {
            return Progress { bar: None, printed };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("valid template"),
        );
        bar.set_message("booting");
        Progress {
            bar: Some(bar),
            printed,
        }
    }

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_string()),
            None => {
                eprintln!("  {line}");
                self.printed.set(Instant::now());
            }
        }
    }

    fn tick(&self, elapsed: Duration) {
        match &self.bar {
            Some(bar) => bar.tick(),
            None if self.printed.get().elapsed() >= crate::progress::EVERY => {
                eprintln!(
                    "  [guest] elapsed {}: running",
                    crate::progress::elapsed(elapsed)
                );
                self.printed.set(Instant::now());
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_the_lab_default() {
        let mut b = Boot::new(
            Path::new("/k/vmlinuz"),
            Path::new("/k/initrd.gz"),
            Path::new("/k/console.log"),
        );
        b.append = "quiet".into();
        let args = b.args();
        let joined = args.join(" ");
        assert!(
            joined.contains("-machine q35 -cpu max -accel tcg -m 1024 -smp 2"),
            "{joined}"
        );
        assert!(joined.contains("-no-reboot"), "{joined}");
        assert!(
            joined.contains("-kernel /k/vmlinuz -initrd /k/initrd.gz"),
            "{joined}"
        );
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert_eq!(
            append,
            "console=ttyS0 panic=-1 oops=panic rdinit=/init quiet"
        );
    }

    #[test]
    fn an_arm64_guest_boots_on_virt_with_the_pl011_console() {
        let mut b = Boot::new(
            Path::new("/k/vmlinuz"),
            Path::new("/k/initrd.gz"),
            Path::new("/k/console.log"),
        );
        b.set_arch(Arch::Aarch64);
        if std::env::var_os("TOA_QEMU").is_none() {
            assert_eq!(b.qemu, QEMU_AARCH64);
        }
        let joined = b.args().join(" ");
        assert!(
            joined.contains("-machine virt -cpu max,pauth-impdef=on -accel tcg"),
            "{joined}"
        );
        assert!(b.cmdline().starts_with("console=ttyAMA0 "), "{joined}");
    }

    #[test]
    fn kvm_only_when_asked() {
        if std::env::var_os("TOA_KVM").is_none() {
            assert_eq!(choose_accel(false), Accel::Tcg);
        }
    }

    #[test]
    fn timeout_message_names_the_log() {
        let o = BootOutcome {
            console: String::new(),
            console_log: "/x/console.log".into(),
            timed_out: true,
            silent: false,
            timeout: Duration::from_secs(7),
            exit_code: None,
            elapsed: Duration::from_secs(7),
            to_init: None,
        };
        assert_eq!(
            o.failure().unwrap(),
            "timed out after 7 s; console log: /x/console.log"
        );
    }

    #[test]
    fn timeout_kills_a_hung_guest() {
        // A script that prints like a guest and then hangs stands in for QEMU.
        let dir = crate::testing::scratch("qemu-timeout");
        let fake = dir.join("fake-qemu");
        std::fs::write(&fake, "#!/bin/sh\necho 'TOA-LAB INIT'\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut b = Boot::new(Path::new("k"), Path::new("i"), &dir.join("console.log"));
        b.qemu = fake.into();
        b.timeout = Duration::from_secs(2);
        let started = Instant::now();
        let outcome = boot(&b).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(outcome.timed_out);
        assert!(outcome.console.contains("TOA-LAB INIT"));
        assert!(outcome.to_init.is_some());
        assert_eq!(
            std::fs::read_to_string(dir.join("console.log")).unwrap(),
            "TOA-LAB INIT\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
