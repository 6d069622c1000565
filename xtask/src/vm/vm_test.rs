//! `cargo xtask vm-test`: boot a distro kernel with toa.ko and run the lab.
//!
//! The guest's /init (see `guest_init.sh`) reports on the serial console with
//! `TOA-LAB ...` lines; [`parse_console`] turns them into a report and
//! [`problems`] decides what fails the run.
//!
//! Files: `target/vm/<distro>/` holds the initramfs, `console.log` and the
//! module under test; downloads and extracted kernels live in the cache
//! (`TOA_CACHE_DIR`). Environment: `TOA_KVM=1` asks for KVM (as `--kvm`),
//! `TOA_QEMU` names another emulator binary, `TOA_APT_KEYRING` another
//! keyring for InRelease signatures.

use crate::distro::Distro;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Distro release whose kernel to boot (see distros/). Default kernel: the one
    /// a default install runs after updates (its linux-image-<flavour> metapackage's).
    #[arg(long, default_value = "debian-12", value_parser = crate::distro::recipe::parse)]
    pub distro: crate::distro::Recipe,
    /// Kernel architecture, as `uname -m` prints it: aarch64 boots the release's
    /// arm64 kernel under qemu-system-aarch64 -M virt (TCG). Default: x86_64.
    #[arg(long, value_enum)]
    pub arch: Option<crate::distro::arch::Arch>,
    /// Boot this kernel of the release instead, as `uname -r` prints it (any
    /// suite or flavour `cargo xtask kernels` lists, e.g. an rt-amd64 one).
    #[arg(long, value_name = "RELEASE", conflicts_with = "flavour")]
    pub kernel: Option<String>,
    /// Boot the default kernel's ABI in this flavour instead (`cloud-amd64`,
    /// `rt-amd64`).
    #[arg(long, value_name = "FLAVOUR")]
    pub flavour: Option<String>,
    /// Run only these lab scenarios (names as `toa-lab scenarios --only`
    /// takes them); each must then report a result. ktls, which leaves
    /// toa.ko loaded until reboot, runs in a lab run of its own after the
    /// operator checks.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub only: Vec<String>,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Use KVM when /dev/kvm is usable (also TOA_KVM=1); the default is TCG.
    #[arg(long)]
    pub kvm: bool,
    /// Load this toa.ko instead of building and packing one for the distro.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Connections of the malformed-options scenario (the lab's default is 200).
    #[arg(long, value_name = "N")]
    pub fuzz_connections: Option<u64>,
    /// Seed of the malformed-option generator, to replay a failed run.
    #[arg(long, value_name = "SEED")]
    pub fuzz_seed: Option<u64>,
    /// `bpf`: no toa.ko; the guest loads the eBPF mode and the lab expects
    /// its semantics (the module still selects the kernel to boot).
    #[arg(long, value_enum, default_value_t = Mode::Kmod)]
    pub mode: Mode,
    /// With `--mode bpf`: the capture path `toa bpf load` is asked for. The
    /// guest's `toa status` must show the one asked for, or with `auto` the
    /// one this kernel should accept (fexit from 5.11, sock-ops before).
    #[arg(long, value_enum, default_value_t = Capture::Auto)]
    pub capture: Capture,
    /// With `--mode bpf`: boot the guest as a cgroup v1 host (a tmpfs at
    /// /sys/fs/cgroup holding each v1 controller and no cgroup2, as Amazon
    /// Linux 2 or `systemd.unified_cgroup_hierarchy=0` boot); the guest
    /// checks that `toa bpf load` and `toa bpf unload` leave every v1 mount
    /// as it was.
    #[arg(long)]
    pub cgroup_v1: bool,
    /// Boot Debian 12's kernel built here with KASAN, lockdep (PROVE_LOCKING,
    /// PROVE_RCU), might-sleep and list checks, with toa.ko built against it,
    /// and `panic_on_warn=1` (and hung-task and soft-lockup panics; x86_64,
    /// toa.ko only; built once (~25 min on two cores), then cached
    /// under target/cache/sanitizer-kernel). The guest gets 2 GiB and three
    /// times --timeout.
    #[arg(long, conflicts_with_all = ["kernel", "flavour"])]
    pub sanitizers: bool,
    /// Seconds of the chaos run (random syscall sequences with rmmod/insmod
    /// between, `toa-lab chaos`), which a module-mode run makes after the
    /// operator checks; 0 leaves it out. The guest's default is 20.
    #[arg(long, value_name = "SECS")]
    pub chaos: Option<u64>,
    /// Seed of the chaos run, to replay a failed one (it prints its seed).
    #[arg(long, value_name = "SEED")]
    pub chaos_seed: Option<u64>,
    /// Let the chaos run put kTLS (TCP_ULP "tls") on sockets too; it may
    /// pin the module, and the ktls scenario after it then cannot get a
    /// fresh tls.ko: use with `--only chaos`.
    #[arg(long)]
    pub chaos_tls: bool,
    /// Offline: print what a run would download (from the recipe's fixture
    /// metadata under xtask/tests/fixtures/), extract, build, pack into the
    /// initramfs and give QEMU, and stop. RPM-family recipes.
    #[arg(long, conflicts_with_all = ["sanitizers", "module"])]
    pub dry_run: bool,
}

/// Which implementation the guest runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Kmod,
    Bpf,
}

/// The eBPF mode's capture path, as `toa bpf load --capture` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    Auto,
    Fexit,
    SockOps,
}

impl Capture {
    pub fn word(self) -> &'static str {
        match self {
            Capture::Auto => "auto",
            Capture::Fexit => "fexit",
            Capture::SockOps => "sock-ops",
        }
    }

    /// What `toa status` must show on kernel `release` of `arch`: `auto`
    /// takes fexit where tracing programs may use socket storage (5.11) and
    /// a trampoline can be attached to a kernel function (arm64: ftrace
    /// direct calls, 6.4; Debian 12's 6.1 arm64 refuses the attach).
    pub fn expected(self, release: &str, arch: crate::distro::arch::Arch) -> Capture {
        if self != Capture::Auto {
            return self;
        }
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        let needed = match arch {
            crate::distro::arch::Arch::X86_64 => (5, 11),
            crate::distro::arch::Arch::Aarch64 => (6, 4),
        };
        if version >= needed {
            Capture::Fexit
        } else {
            Capture::SockOps
        }
    }
}

/// Where the guest's /init finds the module under test.
pub const GUEST_MODULE: &str = "/lib/modules/toa.ko";

/// The lab scenario that leaves toa.ko loaded until reboot: the guest runs
/// it in a second lab run, after the operator checks.
pub const KTLS: &str = "ktls";
/// The chaos run's result name (`toa-lab chaos`, a lab run of its own).
pub const CHAOS: &str = "chaos";

/// The guest's checks of a cgroup v1 boot (`--cgroup-v1`, guest_init.sh):
/// the v1 mounts after `toa bpf load` and after the operator's unload.
pub const CGROUP_V1_CHECKS: [&str; 2] = ["cgroup-v1-load", "cgroup-v1-unload"];

/// Scenarios that must report a result besides what the lab runs by
/// default: a module-mode run's second lab run (ktls), or each one named.
pub(crate) fn required_results(args: &Args) -> Vec<String> {
    match args.mode {
        Mode::Bpf if args.cgroup_v1 => CGROUP_V1_CHECKS.map(String::from).to_vec(),
        Mode::Bpf => Vec::new(),
        Mode::Kmod if args.only.is_empty() && args.chaos == Some(0) => vec![KTLS.to_string()],
        Mode::Kmod if args.only.is_empty() => vec![CHAOS.to_string(), KTLS.to_string()],
        Mode::Kmod => args.only.clone(),
    }
}

/// `toa-lab` arguments as the guest's /init takes them from `toa_lab.args=`
/// on the kernel command line: commas stand for spaces.
pub fn guest_command<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",")
}

/// The guest's lab command when the defaults are not what was asked for;
/// `release` is the kernel the guest boots.
pub(crate) fn scenario_args(
    args: &Args,
    release: &str,
    arch: crate::distro::arch::Arch,
) -> Option<String> {
    let bpf = args.mode == Mode::Bpf;
    if args.fuzz_connections.is_none()
        && args.fuzz_seed.is_none()
        && !bpf
        && args.only.is_empty()
        && args.chaos.is_none()
        && args.chaos_seed.is_none()
        && !args.chaos_tls
    {
        return None;
    }
    let mut words: Vec<String> = ["scenarios", "--expect", "module", "--module", GUEST_MODULE]
        .map(String::from)
        .to_vec();
    if bpf {
        words = ["scenarios", "--expect", "bpf"].map(String::from).to_vec();
    }
    if let Some(n) = args.fuzz_connections {
        words.extend(["--fuzz-connections".into(), n.to_string()]);
    }
    if let Some(seed) = args.fuzz_seed {
        words.extend(["--fuzz-seed".into(), seed.to_string()]);
    }
    // One name per --only: a comma in toa_lab.args stands for a space.
    for name in &args.only {
        words.extend(["--only".into(), name.clone()]);
    }
    let mut kernel_args = String::new();
    if let Some(secs) = args.chaos {
        kernel_args.push_str(&format!("toa_lab.chaos={secs} "));
    }
    if let Some(seed) = args.chaos_seed {
        kernel_args.push_str(&format!("toa_lab.chaos_seed={seed} "));
    }
    if args.chaos_tls {
        kernel_args.push_str("toa_lab.chaos_tls=1 ");
    }
    if bpf {
        kernel_args = format!(
            "toa_lab.kmod=0 toa_lab.capture={} toa_lab.capture_expect={} ",
            args.capture.word(),
            args.capture.expected(release, arch).word()
        );
        if args.cgroup_v1 {
            kernel_args.push_str("toa_lab.cgroup=v1 ");
        }
    }
    Some(format!(
        "{kernel_args}toa_lab.args={}",
        guest_command(&words)
    ))
}

/// How to run the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub timeout: Duration,
    /// Use KVM if usable (see [`crate::vm::qemu::choose_accel`]).
    pub kvm: bool,
    /// Extra kernel command line.
    pub append: String,
    /// Extra QEMU arguments (e.g. `-icount shift=0,sleep=off` for benchmarks).
    pub qemu_args: Vec<String>,
    /// Virtual CPUs of the guest.
    pub cpus: u32,
    /// All vCPUs in one TCG thread (see [`crate::vm::qemu::Boot::tcg_single_thread`]).
    pub tcg_single_thread: bool,
    /// Guest memory in MiB; `None`: the lab's default (see [`crate::vm::qemu::Boot`]).
    pub memory_mb: Option<u32>,
    /// A kernel built here (`--sanitizers`) in place of the distro's
    /// packages; see [`own_kernel_hooks`].
    pub own_kernel: Option<LabKernel>,
    /// Scenarios whose result must be on the console (see [`missing_results`]).
    pub required: Vec<String>,
    /// Put the previous release's `toa` in the guest too, as
    /// /bin/toa-previous, for the eBPF mode's upgrade scenario.
    pub previous_toa: bool,
}

impl Default for LabOptions {
    fn default() -> LabOptions {
        LabOptions {
            timeout: Duration::from_secs(300),
            kvm: false,
            append: String::new(),
            qemu_args: Vec::new(),
            cpus: 2,
            // The kernel patches its own text at run time (static keys on
            // the first packet, kprobes, module loads); multi-threaded TCG
            // was seen executing a stale int3 from such a patch (an oops in
            // inet_ehashfn on 6.12). One TCG thread is coherent.
            tcg_single_thread: true,
            memory_mb: None,
            own_kernel: None,
            required: Vec::new(),
            previous_toa: false,
        }
    }
}

/// What the lab boots instead of a distro kernel (see
/// `vm_test::LabOptions::own_kernel`): the kernel and the lab's test module
/// for it. Nothing is preloaded: what the lab needs is built in.
#[derive(Debug, Clone)]
pub struct LabKernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub source: crate::repo::debian::PackageRef,
    /// The lab's in-kernel listener, built for this kernel.
    pub lab_modules: Vec<PathBuf>,
}

impl LabKernel {
    /// The kernel as the lab's report names it (the source package stands
    /// for the image; there is no modules package).
    pub fn packages(&self) -> crate::repo::debian::KernelPackages {
        crate::repo::debian::KernelPackages {
            release: self.release.clone(),
            version: format!("{} {}", self.source.name, self.source.version),
            image: self.source.clone(),
            modules: Vec::new(),
            headers: String::new(),
        }
    }

    /// The guest's kernel files: no module to preload (tun, tls: built in).
    pub fn files(&self) -> crate::repo::deb::KernelFiles {
        crate::repo::deb::KernelFiles {
            release: self.release.clone(),
            vmlinuz: self.vmlinuz.clone(),
            modules: Vec::new(),
        }
    }
}

/// The modules the guest takes from the kernel's packages: tun for the
/// simulator, tls for the ktls scenario (where the kernel has kTLS).
pub const GUEST_MODULES: [&str; 2] = ["tun", "tls"];

pub fn run(args: Args) -> Result<()> {
    if args.cgroup_v1 && args.mode != Mode::Bpf {
        crate::report::usage_bail!(
            "--cgroup-v1 boots a cgroup v1 host for the eBPF mode: give it with --mode bpf"
        );
    }
    let distro = args.distro.distro(args.arch)?;
    crate::repo::lab_kernel::ensure_bootable(&distro)?;
    let module = match (args.module.clone(), kernel_asked(&distro, &args)?) {
        (Some(path), _) => path,
        (None, None) => packed_module(&distro)?,
        (None, Some(release)) => packed_module_of(&distro, &release)?,
    };
    let release = module_release(&module)?;
    let opts = LabOptions {
        timeout: Duration::from_secs(args.timeout),
        kvm: args.kvm,
        append: scenario_args(&args, &release, distro.arch_kind()).unwrap_or_default(),
        required: required_results(&args),
        previous_toa: args.mode == Mode::Bpf,
        ..LabOptions::default()
    };
    let report = run_lab(&distro, &module, &opts)?;
    report.print();
    report.check()
}

/// The kernel `--kernel` or `--flavour` names, if any.
fn kernel_asked(distro: &Distro, args: &Args) -> Result<Option<String>> {
    if let Some(release) = &args.kernel {
        return Ok(Some(release.clone()));
    }
    let Some(flavour) = &args.flavour else {
        return Ok(None);
    };
    let repo = distro
        .debian()
        .context("--flavour picks among a Debian-family release's flavours")?;
    if !repo.flavours.contains(flavour) {
        bail!(
            "{}: no flavour \"{flavour}\"; its flavours: {}",
            distro.name,
            repo.flavours.join(", ")
        );
    }
    let default = crate::repo::debian::default_release(distro)?;
    let abi = default
        .strip_suffix(repo.default_flavour())
        .with_context(|| format!("{default} does not end in -{}", repo.default_flavour()))?;
    Ok(Some(format!("{abi}{flavour}")))
}

/// Builds and packs toa.ko for the default kernel and `release`, and copies
/// `release`'s module out of the tarball into the VM directory.
pub fn packed_module_of(distro: &Distro, release: &str) -> Result<PathBuf> {
    let built = crate::build::build_for_lab(distro, Some(release))?;
    let member = format!("{}/{release}/toa.ko", distro.dist_name());
    let out = vm_dir(distro).join("toa.ko");
    extract_from_tarball(&built.tarball, &member, &out)?;
    eprintln!("module: {member} from {}", built.tarball.display());
    let packed = module_release(&out)?;
    if packed != release {
        bail!(
            "{member} in {} is for kernel {packed}",
            built.tarball.display()
        );
    }
    Ok(out)
}

/// Builds and packs toa.ko for the distro's default kernel, and copies the
/// top-level module out of the tarball (what operators install) into the VM
/// directory.
pub fn packed_module(distro: &Distro) -> Result<PathBuf> {
    let built = crate::build::build_distro(distro)?;
    let out = vm_dir(distro).join("toa.ko");
    extract_from_tarball(&built.tarball, &built.ko_in_tarball, &out)?;
    eprintln!(
        "module: {} from {}",
        built.ko_in_tarball,
        built.tarball.display()
    );
    // The lab boots the kernel the module says it is for; that must be the
    // kernel the build reported.
    let packed = module_release(&out)?;
    if packed != built.release {
        bail!(
            "the build reported kernel {} but {} in {} is for kernel {packed}",
            built.release,
            built.ko_in_tarball,
            built.tarball.display()
        );
    }
    Ok(out)
}

/// The kernel release a module was built for: the first word of its vermagic.
pub fn module_release(ko: &Path) -> Result<String> {
    let bytes = std::fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let vermagic = crate::repo::deb::modinfo_value(&bytes, "vermagic")
        .with_context(|| format!("{} is not a kernel module", ko.display()))?
        .with_context(|| format!("{} has no vermagic in .modinfo", ko.display()))?;
    match vermagic.split_whitespace().next() {
        Some(release) => Ok(release.to_string()),
        None => bail!("{} has an empty vermagic", ko.display()),
    }
}

/// `target/vm/<distro>/` (`<distro>-aarch64/` for another architecture than
/// x86_64): the initramfs, the console log, the module under test.
pub fn vm_dir(distro: &Distro) -> PathBuf {
    let dir = crate::host::cache::target_dir().join("vm");
    match distro.arch_kind() {
        crate::distro::arch::Arch::X86_64 => dir.join(&distro.name),
        arch => dir.join(format!("{}-{}", distro.name, arch.name())),
    }
}

/// Copy `member` of the gzip'd tarball `tarball` to `out`.
pub fn extract_from_tarball(tarball: &Path, member: &str, out: &Path) -> Result<()> {
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let want = member.trim_start_matches("./");
    let mut seen = Vec::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", tarball.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", tarball.display()))?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path == want && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            return crate::host::fs::write_atomic(out, &bytes);
        }
        seen.push(path);
    }
    bail!(
        "{} has no file {member}; it holds: {}",
        tarball.display(),
        seen.join(", ")
    )
}

/// One scenario's outcome as the lab program printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Everything the guest reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `uname -r` in the guest.
    pub kernel: Option<String>,
    pub insmod_ok: Vec<String>,
    pub insmod_failed: Vec<String>,
    pub results: Vec<ScenarioResult>,
    /// `TOA-LAB OPERATOR name PASS|FAIL detail`: the operator's `toa`
    /// command proven after the scenarios (see guest_init.sh).
    pub operator: Vec<ScenarioResult>,
    /// `TOA-LAB NOT-OFFERED name why`: scenarios this kernel cannot run
    /// (a feature it lacks), with the reason; neither passed nor failed.
    pub not_offered: Vec<ScenarioResult>,
    /// `TOA-LAB OPERATOR-CHECKS n`: how many operator checks follow.
    pub operator_expected: Option<usize>,
    /// The rest of the `TOA-LAB STATS` line(s).
    pub stats: Vec<String>,
    /// Each run of the lab program, in order: a module-mode scenario run
    /// has two (the ktls scenario runs last, alone; see guest_init.sh).
    pub runs: Vec<LabRun>,
    /// dmesg lines, if the section was complete.
    pub dmesg: Option<Vec<String>>,
    pub taint: Option<u64>,
    /// The guest reached its poweroff.
    pub poweroff: bool,
    /// Alarming kernel lines on the console itself once /init ran (an oops
    /// raises the console log level, so it shows there even if the guest
    /// never reaches its dmesg section).
    pub console_alarms: Vec<String>,
}

/// One run of the lab program: from its START line (or its first line of
/// output) to its EXIT line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabRun {
    /// Index in [`Parsed::results`] of the run's first result.
    pub first_result: usize,
    /// How many results it printed.
    pub results: usize,
    /// How many scenarios it found this kernel cannot run.
    pub not_offered: usize,
    /// `(pass, fail)` of its DONE line.
    pub done: Option<(u32, u32)>,
    /// Its exit status.
    pub exit: Option<i32>,
}

impl Parsed {
    /// The run the next RESULT or DONE line belongs to: the last one, unless
    /// it has finished (a lab program that printed no START line still
    /// gets a run).
    fn open_run(&mut self) -> &mut LabRun {
        let finished = self
            .runs
            .last()
            .is_none_or(|r| r.done.is_some() || r.exit.is_some());
        if finished {
            self.runs.push(LabRun {
                first_result: self.results.len(),
                ..LabRun::default()
            });
        }
        self.runs.last_mut().expect("a run was just pushed")
    }

    /// The results of `run`.
    pub fn results_of(&self, run: &LabRun) -> &[ScenarioResult] {
        let end = (run.first_result + run.results).min(self.results.len());
        &self.results[run.first_result.min(end)..end]
    }
}

/// Parse a serial console log.
pub fn parse_console(console: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut dmesg: Option<Vec<String>> = None;
    let mut seen_init = false;
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        let marker = line
            .find("TOA-LAB ")
            .map(|at| &line[at + "TOA-LAB ".len()..]);
        if let Some(lines) = dmesg.as_mut() {
            if marker.is_some_and(|m| m.trim_end() == "DMESG-END") {
                p.dmesg = dmesg.take();
            } else {
                lines.push(line.to_string());
            }
            continue;
        }
        let Some(rest) = marker else {
            let alarming =
                line.contains("Kernel panic") || DMESG_ALARMS.iter().any(|a| line.contains(a));
            if seen_init && alarming {
                p.console_alarms.push(line.trim().to_string());
            }
            continue;
        };
        seen_init = true;
        let (word, args) = rest.split_once(' ').unwrap_or((rest.trim_end(), ""));
        let args = args.trim();
        match word {
            "KERNEL" => p.kernel = Some(args.to_string()),
            "INSMOD" => match args.split_once(' ') {
                Some(("OK", what)) => p.insmod_ok.push(what.to_string()),
                Some(("FAIL", what)) => p.insmod_failed.push(what.to_string()),
                _ if args == "FAIL" => p.insmod_failed.push(String::new()),
                _ => {}
            },
            "START" => p.runs.push(LabRun {
                first_result: p.results.len(),
                ..LabRun::default()
            }),
            "RESULT" | "OPERATOR" => {
                let mut parts = args.splitn(3, ' ');
                let name = parts.next().unwrap_or_default().to_string();
                let status = parts.next().unwrap_or_default();
                let mut detail = parts.next().unwrap_or_default().trim().to_string();
                let passed = status == "PASS";
                if status != "PASS" && status != "FAIL" {
                    detail = format!("unrecognised status {status:?} {detail}")
                        .trim_end()
                        .to_string();
                }
                let result = ScenarioResult {
                    name,
                    passed,
                    detail,
                };
                if word == "RESULT" {
                    p.open_run().results += 1;
                    p.results.push(result);
                } else {
                    p.operator.push(result);
                }
            }
            "NOT-OFFERED" => {
                let (name, why) = args.split_once(' ').unwrap_or((args, ""));
                p.open_run().not_offered += 1;
                p.not_offered.push(ScenarioResult {
                    name: name.to_string(),
                    passed: false,
                    detail: why.trim().to_string(),
                });
            }
            "OPERATOR-CHECKS" => p.operator_expected = args.parse().ok(),
            "STATS" => p.stats.push(args.to_string()),
            "DONE" => {
                let field = |key: &str| {
                    args.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<u32>().ok())
                };
                if let (Some(pass), Some(fail)) = (field("pass"), field("fail")) {
                    p.open_run().done = Some((pass, fail));
                }
            }
            "EXIT" => {
                // A lab program that died before its DONE line still ends
                // its run here.
                if p.runs.last().is_none_or(|r| r.exit.is_some()) {
                    p.runs.push(LabRun {
                        first_result: p.results.len(),
                        ..LabRun::default()
                    });
                }
                if let Some(run) = p.runs.last_mut() {
                    run.exit = Some(args.parse().unwrap_or(-1));
                }
            }
            "DMESG-BEGIN" => dmesg = Some(Vec::new()),
            "TAINT" => p.taint = args.parse().ok(),
            "POWEROFF" => p.poweroff = true,
            _ => {}
        }
    }
    p
}

/// Kernel log lines that fail a run when they appear after toa.ko is loaded.
pub const DMESG_ALARMS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "kernel BUG",
    "Oops",
    "Unknown rela relocation",
    "general protection",
    "Call Trace",
    "RCU stall",
    "self-detected stall",
    "detected stalls on CPU",
    "use-after-free",
];

/// Taint bits a correct out-of-tree, unsigned module may set: O and E.
pub const ALLOWED_TAINT: u64 = (1 << 12) | (1 << 13);

const TAINT_FLAGS: &[(char, &str)] = &[
    ('P', "proprietary module"),
    ('F', "module force-loaded"),
    ('S', "kernel running on an out-of-spec system"),
    ('R', "module force-unloaded"),
    ('M', "machine check"),
    ('B', "bad page referenced"),
    ('U', "taint requested by user space"),
    ('D', "kernel died (oops or BUG)"),
    ('A', "ACPI table overridden"),
    ('W', "kernel issued a warning"),
    ('C', "staging driver loaded"),
    ('I', "firmware bug workaround"),
    ('O', "out-of-tree module loaded"),
    ('E', "unsigned module loaded"),
    ('L', "soft lockup"),
    ('K', "kernel live-patched"),
    ('X', "auxiliary taint"),
    ('T', "built with struct randomization"),
    ('N', "in-kernel test"),
];

/// `W (kernel issued a warning), O (out-of-tree module loaded)` for a taint value.
pub fn decode_taint(value: u64) -> String {
    let mut parts = Vec::new();
    for bit in 0..64 {
        if value & (1 << bit) != 0 {
            match TAINT_FLAGS.get(bit) {
                Some((letter, what)) => parts.push(format!("{letter} ({what})")),
                None => parts.push(format!("bit {bit}")),
            }
        }
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// Why a parsed run fails; empty when it passed.
pub fn problems(p: &Parsed, expected_release: &str) -> Vec<String> {
    let mut out = Vec::new();
    match &p.kernel {
        None => {
            out.push("the guest never reported its kernel release (did /init run?)".to_string())
        }
        Some(k) if k != expected_release => {
            out.push(format!("the guest booted {k}, expected {expected_release}"))
        }
        Some(_) => {}
    }
    for line in p.console_alarms.iter().take(5) {
        out.push(format!("console: {line}"));
    }
    if p.console_alarms.len() > 5 {
        out.push(format!(
            "console: ... and {} more alarming lines",
            p.console_alarms.len() - 5
        ));
    }
    for msg in &p.insmod_failed {
        out.push(format!("insmod failed: {msg}"));
    }
    for r in p.results.iter().filter(|r| !r.passed) {
        out.push(format!("scenario {} failed: {}", r.name, r.detail));
    }
    for r in p.operator.iter().filter(|r| !r.passed) {
        out.push(format!(
            "operator command check {} failed: {}",
            r.name, r.detail
        ));
    }
    if let Some(want) = p.operator_expected.filter(|n| *n != p.operator.len()) {
        out.push(format!(
            "{want} operator command checks were announced but {} reported",
            p.operator.len()
        ));
    }
    if p.runs.is_empty() {
        out.push("no TOA-LAB DONE line: the lab program did not finish".to_string());
    }
    for (n, run) in (1..).zip(&p.runs) {
        let at = if p.runs.len() == 1 {
            String::new()
        } else {
            format!("lab run {n} of {}: ", p.runs.len())
        };
        let results = p.results_of(run);
        let passed = results.iter().filter(|r| r.passed).count() as u32;
        let failed = results.len() as u32 - passed;
        match run.done {
            None => out.push(format!(
                "{at}no TOA-LAB DONE line: the lab program did not finish"
            )),
            Some((0, 0)) if run.not_offered == 0 => out.push(format!(
                "{at}the lab program ran no scenario (DONE pass=0 fail=0)"
            )),
            Some((pass, fail)) => {
                if pass != passed || fail != failed {
                    out.push(format!(
                        "{at}DONE says pass={pass} fail={fail} but the console shows {passed} PASS and {failed} FAIL lines"
                    ));
                }
            }
        }
        match run.exit {
            Some(0) => {}
            Some(code) => out.push(format!("{at}the lab program exited with status {code}")),
            None if run.done.is_some() => {}
            None => out.push(format!(
                "{at}the lab program's exit status was not reported"
            )),
        }
    }
    match &p.dmesg {
        None => out.push("no complete dmesg section (DMESG-BEGIN/DMESG-END)".to_string()),
        Some(lines) => {
            let start = lines
                .iter()
                .position(|l| l.contains("TOA-LAB MARK"))
                .map_or(0, |i| i + 1);
            let alarms: Vec<&String> = lines[start..]
                .iter()
                .filter(|l| DMESG_ALARMS.iter().any(|a| l.contains(a)))
                .collect();
            for line in alarms.iter().take(5) {
                out.push(format!("dmesg: {}", line.trim()));
            }
            if alarms.len() > 5 {
                out.push(format!(
                    "dmesg: ... and {} more alarming lines",
                    alarms.len() - 5
                ));
            }
        }
    }
    match p.taint {
        None => out.push("no TOA-LAB TAINT value".to_string()),
        Some(t) if t & !ALLOWED_TAINT != 0 => out.push(format!(
            "kernel tainted {t}: {} (only O and E are acceptable)",
            decode_taint(t & !ALLOWED_TAINT)
        )),
        Some(_) => {}
    }
    out
}

/// Scenarios of `required` that printed no result at all.
pub fn missing_results(p: &Parsed, required: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|name| {
            !p.results.iter().any(|r| &r.name == *name)
                && !p.operator.iter().any(|r| &r.name == *name)
                && !p.not_offered.iter().any(|r| &r.name == *name)
        })
        .map(|name| {
            if name == KTLS || name == CHAOS {
                format!("scenario {name} reported no result (the guest runs it after the operator checks, in a lab run of its own)")
            } else {
                format!("scenario {name} reported no result")
            }
        })
        .collect()
}

/// The outcome of one lab run.
#[derive(Debug, Clone)]
pub struct LabReport {
    pub distro: String,
    /// The kernel booted (`uname -r` expected).
    pub release: String,
    pub kernel_version: String,
    pub accel: crate::vm::qemu::Accel,
    pub parsed: Parsed,
    /// Why the run fails; empty when it passed.
    pub problems: Vec<String>,
    pub console_log: PathBuf,
    /// From QEMU's start to power-off (or the kill).
    pub elapsed: Duration,
    /// From QEMU's start to /init's first line.
    pub to_init: Option<Duration>,
}

impl LabReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// Print the scenario table, the stats and the timing to stdout.
    pub fn print(&self) {
        let rows: Vec<(&str, &str, &str)> = self
            .parsed
            .results
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    if r.passed { "PASS" } else { "FAIL" },
                    r.detail.as_str(),
                )
            })
            .collect();
        let width = rows
            .iter()
            .map(|r| r.0.len())
            .chain(["scenario".len()])
            .max()
            .unwrap_or(8);
        println!("{:width$}  {:6}  detail", "scenario", "result");
        for (name, result, detail) in &rows {
            println!("{name:width$}  {result:6}  {detail}");
        }
        for r in &self.parsed.not_offered {
            println!(
                "{:width$}  -       not offered by this kernel: {}",
                r.name, r.detail
            );
        }
        for r in &self.parsed.operator {
            let result = if r.passed { "PASS" } else { "FAIL" };
            println!("toa command: {} {result} {}", r.name, r.detail);
        }
        for stats in &self.parsed.stats {
            println!("stats: {stats}");
        }
        if let Some(t) = self.parsed.taint {
            println!("taint: {t} ({})", decode_taint(t));
        }
        let to_init = self
            .to_init
            .map(|d| format!("{:.1} s to init, ", d.as_secs_f64()))
            .unwrap_or_default();
        println!(
            "{} {} ({}) under {}: {to_init}{:.1} s in all; console log: {}",
            self.distro,
            self.release,
            self.kernel_version,
            self.accel.name(),
            self.elapsed.as_secs_f64(),
            self.console_log.display()
        );
        let passed = self.parsed.results.iter().filter(|r| r.passed).count();
        println!(
            "vm-test: {} passed, {} failed, {} not offered by this kernel",
            passed,
            self.parsed.results.len() - passed,
            self.parsed.not_offered.len()
        );
    }

    /// `Ok` when the run passed; otherwise an error listing every problem.
    pub fn check(&self) -> Result<()> {
        if self.passed() {
            return Ok(());
        }
        bail!(
            "vm-test on {} ({}) failed:\n  {}\nconsole log: {}",
            self.distro,
            self.release,
            self.problems.join("\n  "),
            self.console_log.display()
        )
    }
}

/// Boot the distro's newest kernel with `module_ko` loaded and run the lab scenarios.
///
/// Errors are for what stopped the lab from running (downloads, builds, a
/// module built for another kernel); a run that went wrong in the guest is
/// an `Ok` report whose [`LabReport::check`] fails.
pub fn run_lab(distro: &Distro, module_ko: &Path, opts: &LabOptions) -> Result<LabReport> {
    // Boot the kernel the module was built for (normally the suite's newest).
    let release = module_release(module_ko)?;
    let kernel = match own_kernel_hooks::default_kernel(distro, opts) {
        Ok(newest) if newest.release == release => newest,
        _ => crate::repo::lab_kernel::for_release(distro, &release).with_context(|| {
            format!(
                "{} is for kernel {release}, which {} does not offer",
                module_ko.display(),
                distro.name
            )
        })?,
    };
    let files = match own_kernel_hooks::files(opts) {
        Some(files) => files,
        None => crate::repo::deb::kernel_files(&kernel, &GUEST_MODULES).or_else(|e| {
            // Kernels built without kTLS (Debian 11: CONFIG_TLS unset) ship no
            // tls.ko; the ktls scenario finds none and says so.
            if format!("{e:#}").contains("module \"tls\" not found") {
                crate::repo::deb::kernel_files(&kernel, &["tun"])
            } else {
                Err(e)
            }
        })?,
    };
    // tls.ko is the ktls scenario's to load and unload, fresh each time;
    // whatever it needs is preloaded with tun.
    let (on_demand, preload): (Vec<PathBuf>, Vec<PathBuf>) = files
        .modules
        .iter()
        .cloned()
        .partition(|m| m.file_name().is_some_and(|n| n == "tls.ko"));
    let busybox = crate::repo::deb::busybox(&crate::repo::lab_kernel::busybox(distro)?)?;
    let arch = distro.arch_kind();
    let lab_program = crate::objects::lab_programs::build_lab_program(arch)?;
    let operator_cli = crate::objects::operator_cli::build_for_lab(arch)?;
    let previous_toa = if opts.previous_toa {
        Some(crate::release::previous_release::build(arch)?)
    } else {
        None
    };
    let lab_modules = match own_kernel_hooks::lab_modules(opts) {
        Some(paths) => paths,
        None => crate::vm::lab_kmod::build(distro, &kernel.release)
            .context("building the lab's test modules")?,
    };
    eprintln!(
        "lab guest: kernel {}, preloading {}",
        files.release,
        preload
            .iter()
            .filter_map(|m| m.file_name()?.to_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let dir = vm_dir(distro);
    let initrd = dir.join("initramfs.cpio.gz");
    crate::vm::initramfs::build_lab(
        &crate::vm::initramfs::LabImage {
            busybox: &busybox,
            preload: &preload,
            toa_ko: module_ko,
            lab_program: &lab_program,
            operator_cli: Some(&operator_cli),
            previous_operator_cli: previous_toa.as_deref(),
            test_modules: &[&lab_modules[..], &on_demand[..]].concat(),
            init: crate::vm::initramfs::GUEST_INIT,
        },
        &initrd,
    )?;

    let mut boot = crate::vm::qemu::Boot::new(&files.vmlinuz, &initrd, &dir.join("console.log"));
    boot.set_arch(arch);
    boot.accel = crate::vm::qemu::choose_accel(opts.kvm);
    boot.timeout = opts.timeout;
    boot.append = opts.append.clone();
    boot.extra_args = opts.qemu_args.clone();
    boot.cpus = opts.cpus;
    boot.tcg_single_thread = opts.tcg_single_thread;
    if let Some(mb) = opts.memory_mb {
        boot.memory_mb = mb;
    }
    let kvm_outcome = if boot.accel == crate::vm::qemu::Accel::Kvm {
        // Where /dev/kvm opens but cannot run this guest (nested setups),
        // QEMU aborts or the guest never prints: fall back to TCG.
        boot.silence_timeout = Some(Duration::from_secs(30));
        let outcome = crate::vm::qemu::boot(&boot)?;
        if outcome.to_init.is_none() && (outcome.silent || outcome.exit_code != Some(0)) {
            let first = outcome
                .console
                .lines()
                .next()
                .unwrap_or("no output")
                .to_string();
            eprintln!("note: KVM did not boot the guest ({first}); retrying under TCG");
            boot.accel = crate::vm::qemu::Accel::Tcg;
            boot.silence_timeout = None;
            None
        } else {
            Some(outcome)
        }
    } else {
        None
    };
    let outcome = match kvm_outcome {
        Some(outcome) => outcome,
        None => crate::vm::qemu::boot(&boot)?,
    };

    let parsed = parse_console(&outcome.console);
    let mut problems = problems(&parsed, &kernel.release);
    problems.extend(missing_results(&parsed, &opts.required));
    if let Some(failure) = outcome.failure() {
        problems.insert(0, failure);
    }
    Ok(LabReport {
        distro: distro.name.clone(),
        release: kernel.release,
        kernel_version: kernel.version,
        accel: boot.accel,
        parsed,
        problems,
        console_log: outcome.console_log,
        elapsed: outcome.elapsed,
        to_init: outcome.to_init,
    })
}

/// Where [`run_lab`] takes a kernel built here ([`LabOptions::own_kernel`],
/// `--sanitizers`) instead of the distro's packages: its image, no module to
/// preload or load on demand (tun and tls are built in, so the guest's
/// preload list is empty and there is no tls.ko) and the lab's test module
/// built for it.
mod own_kernel_hooks {
    use super::LabOptions;
    use crate::distro::Distro;
    use anyhow::Result;
    use std::path::PathBuf;

    pub fn default_kernel(
        distro: &Distro,
        opts: &LabOptions,
    ) -> Result<crate::repo::debian::KernelPackages> {
        match &opts.own_kernel {
            Some(own) => Ok(own.packages()),
            None => crate::repo::debian::default_kernel(distro),
        }
    }

    pub fn files(opts: &LabOptions) -> Option<crate::repo::deb::KernelFiles> {
        opts.own_kernel.as_ref().map(|own| own.files())
    }

    pub fn lab_modules(opts: &LabOptions) -> Option<Vec<PathBuf>> {
        opts.own_kernel.as_ref().map(|own| own.lab_modules.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../tests/fixtures/console/good.log");
    const FAILED: &str = include_str!("../../tests/fixtures/console/failed-scenario.log");
    const OOPS: &str = include_str!("../../tests/fixtures/console/oops.log");
    const TAINTED: &str = include_str!("../../tests/fixtures/console/bad-taint.log");
    const NO_DONE: &str = include_str!("../../tests/fixtures/console/no-done.log");
    const PANIC: &str = include_str!("../../tests/fixtures/console/panic.log");
    const RELEASE: &str = "6.1.0-50-amd64";

    #[test]
    fn operator_command_lines_are_their_own_list() {
        let console = format!(
            "{GOOD}TOA-LAB OPERATOR-OUT selftest-module: PASS v4-toa-on-inet: ...\n\
             TOA-LAB OPERATOR selftest-module PASS exit 0\n\
             TOA-LAB OPERATOR selftest-no-module FAIL exit 0, expected 1 and \"FAIL v4\"\n"
        );
        let p = parse_console(&console);
        assert_eq!(p.results.len(), 3, "scenario results are unchanged");
        assert_eq!(p.operator.len(), 2);
        assert!(p.operator[0].passed);
        let problems = problems(&p, RELEASE);
        assert!(
            problems
                .iter()
                .any(|m| m.starts_with("operator command check selftest-no-module failed")),
            "{problems:?}"
        );
    }

    /// A module-mode run as the guest prints it: the scenarios, the
    /// operator checks, then the ktls run of its own.
    fn two_runs(ktls: &str) -> String {
        let (main, tail) = GOOD.split_once("TOA-LAB DMESG-BEGIN").unwrap();
        format!(
            "{main}TOA-LAB INSMOD OK toa.ko\n\
             TOA-LAB START expect=module kernel={RELEASE}\n\
             TOA-LAB SKIP v4-254-8 not asked\n\
             {ktls}TOA-LAB DMESG-BEGIN{tail}"
        )
    }

    #[test]
    fn the_ktls_run_is_counted_on_its_own() {
        let console = two_runs(
            "TOA-LAB RESULT ktls PASS A: ...; B: ...\n\
             TOA-LAB DONE pass=1 fail=0\n\
             TOA-LAB EXIT 0\n",
        );
        let p = parse_console(&console);
        assert_eq!(p.runs.len(), 2);
        assert_eq!(p.results.len(), 4);
        assert_eq!(p.results_of(&p.runs[1])[0].name, KTLS);
        assert_eq!(p.insmod_ok, ["tun.ko", "toa.ko", "toa.ko"]);
        assert_eq!(problems(&p, RELEASE), Vec::<String>::new());
        assert_eq!(
            missing_results(&p, &[KTLS.to_string()]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_failed_or_missing_ktls_run_fails() {
        let failed = parse_console(&two_runs(
            "TOA-LAB RESULT ktls FAIL part B: rmmod toa succeeded\n\
             TOA-LAB DONE pass=0 fail=1\n\
             TOA-LAB EXIT 1\n",
        ));
        assert_eq!(
            problems(&failed, RELEASE),
            [
                "scenario ktls failed: part B: rmmod toa succeeded",
                "lab run 2 of 2: the lab program exited with status 1"
            ]
        );
        // The second run died before its DONE line.
        let died = parse_console(&two_runs("TOA-LAB EXIT 139\n"));
        let problems = problems(&died, RELEASE);
        assert!(
            problems.contains(
                &"lab run 2 of 2: no TOA-LAB DONE line: the lab program did not finish".to_string()
            ),
            "{problems:?}"
        );
        assert!(
            problems
                .contains(&"lab run 2 of 2: the lab program exited with status 139".to_string()),
            "{problems:?}"
        );
        // It never ran at all.
        let absent = parse_console(GOOD);
        assert_eq!(
            missing_results(&absent, &required_results(&kmod_args())),
            [
                "scenario chaos reported no result (the guest runs it after the operator checks, in a lab run of its own)",
                "scenario ktls reported no result (the guest runs it after the operator checks, in a lab run of its own)"
            ]
        );
    }

    #[test]
    fn a_scenario_the_kernel_cannot_run_is_reported_not_missing() {
        let p = parse_console(&two_runs(
            "TOA-LAB NOT-OFFERED ktls kTLS: no tls.ko and none built in (no /proc/sys/net/ipv4/tcp_available_ulp)\n\
             TOA-LAB DONE pass=0 fail=0\n\
             TOA-LAB EXIT 0\n",
        ));
        assert_eq!(p.not_offered.len(), 1);
        assert_eq!(p.not_offered[0].name, KTLS);
        assert!(p.not_offered[0].detail.starts_with("kTLS: no tls.ko"));
        assert_eq!(p.runs[1].not_offered, 1);
        assert_eq!(problems(&p, RELEASE), Vec::<String>::new());
        assert_eq!(
            missing_results(&p, &[KTLS.to_string()]),
            Vec::<String>::new()
        );
        // A run that offered nothing and ran nothing is still a problem.
        let empty = parse_console(&two_runs("TOA-LAB DONE pass=0 fail=0\nTOA-LAB EXIT 0\n"));
        assert!(
            problems(&empty, RELEASE)
                .iter()
                .any(|m| m.contains("ran no scenario")),
            "{:?}",
            problems(&empty, RELEASE)
        );
    }

    #[test]
    fn a_run_with_a_wrong_done_line_is_named() {
        let p = parse_console(&two_runs(
            "TOA-LAB RESULT ktls PASS x\n\
             TOA-LAB DONE pass=2 fail=0\n\
             TOA-LAB EXIT 0\n",
        ));
        assert_eq!(
            problems(&p, RELEASE),
            ["lab run 2 of 2: DONE says pass=2 fail=0 but the console shows 1 PASS and 0 FAIL lines"]
        );
    }

    fn kmod_args() -> Args {
        Args {
            distro: crate::distro::Recipe::named("debian-12").unwrap(),
            arch: None,
            kernel: None,
            flavour: None,
            only: Vec::new(),
            timeout: 300,
            kvm: false,
            module: None,
            fuzz_connections: None,
            fuzz_seed: None,
            mode: Mode::Kmod,
            capture: Capture::Auto,
            sanitizers: false,
            chaos: None,
            chaos_seed: None,
            chaos_tls: false,
            cgroup_v1: false,
            dry_run: false,
        }
    }

    #[test]
    fn only_goes_to_the_guest_one_name_per_flag() {
        let x86 = crate::distro::arch::Arch::X86_64;
        let mut args = kmod_args();
        args.only = vec!["reload".into(), KTLS.into()];
        assert_eq!(
            scenario_args(&args, "6.1.0-57-amd64", x86).unwrap(),
            "toa_lab.args=scenarios,--expect,module,--module,/lib/modules/toa.ko,\
             --only,reload,--only,ktls"
        );
        assert_eq!(required_results(&args), ["reload", "ktls"]);
        assert_eq!(required_results(&kmod_args()), ["chaos", "ktls"]);
        let mut no_chaos = kmod_args();
        no_chaos.chaos = Some(0);
        assert_eq!(required_results(&no_chaos), ["ktls"]);
        no_chaos.chaos_seed = Some(7);
        assert!(scenario_args(
            &no_chaos,
            "6.1.0-57-amd64",
            crate::distro::arch::Arch::X86_64
        )
        .unwrap()
        .starts_with("toa_lab.chaos=0 toa_lab.chaos_seed=7 toa_lab.args=scenarios,"));
        args.mode = Mode::Bpf;
        assert!(required_results(&args).is_empty());
        // A cgroup v1 guest must report its mount checks.
        args.cgroup_v1 = true;
        assert_eq!(required_results(&args), CGROUP_V1_CHECKS);
        assert!(scenario_args(&args, "6.1.0-57-amd64", x86)
            .unwrap()
            .contains(" toa_lab.cgroup=v1 "));
        let missing = missing_results(&parse_console(GOOD), &required_results(&args));
        assert_eq!(missing.len(), 2, "{missing:?}");
    }

    #[test]
    fn operator_checks_that_go_missing_are_a_problem() {
        let console = format!(
            "{GOOD}TOA-LAB OPERATOR-CHECKS 2\n\
             TOA-LAB OPERATOR status PASS exit 0\n"
        );
        let p = parse_console(&console);
        assert_eq!(p.operator_expected, Some(2));
        let problems = problems(&p, RELEASE);
        assert!(
            problems
                .iter()
                .any(|m| m == "2 operator command checks were announced but 1 reported"),
            "{problems:?}"
        );
    }

    #[test]
    fn test_bpf_mode_skips_the_module() {
        let mut args = Args {
            distro: crate::distro::Recipe::named("debian-12").unwrap(),
            arch: None,
            kernel: None,
            flavour: None,
            only: Vec::new(),
            timeout: 300,
            kvm: false,
            module: None,
            fuzz_connections: None,
            fuzz_seed: None,
            mode: Mode::Kmod,
            capture: Capture::Auto,
            sanitizers: false,
            chaos: None,
            chaos_seed: None,
            chaos_tls: false,
            cgroup_v1: false,
            dry_run: false,
        };
        let x86 = crate::distro::arch::Arch::X86_64;
        assert_eq!(
            scenario_args(&args, "6.1.0-57-amd64", x86),
            None,
            "module mode keeps the guest's default"
        );
        args.mode = Mode::Bpf;
        assert_eq!(
            scenario_args(&args, "6.1.0-57-amd64", x86).unwrap(),
            "toa_lab.kmod=0 toa_lab.capture=auto toa_lab.capture_expect=fexit \
             toa_lab.args=scenarios,--expect,bpf"
        );
        args.capture = Capture::SockOps;
        assert!(scenario_args(&args, "6.1.0-57-amd64", x86)
            .unwrap()
            .starts_with(
                "toa_lab.kmod=0 toa_lab.capture=sock-ops toa_lab.capture_expect=sock-ops "
            ));
    }

    #[test]
    fn auto_capture_is_fexit_where_the_kernel_offers_it() {
        use crate::distro::arch::Arch::{Aarch64, X86_64};
        use Capture::{Auto, Fexit, SockOps};
        let cases = [
            (Auto, "5.10.0-46-amd64", X86_64, SockOps),
            (Auto, "5.15.0-91-generic", X86_64, Fexit),
            (Auto, "6.12.118+deb13-amd64", X86_64, Fexit),
            (Auto, "7.2.13+deb14-amd64", X86_64, Fexit),
            (Auto, "5.15.0-91-generic", Aarch64, SockOps),
            (Auto, "6.1.0-57-arm64", Aarch64, SockOps),
            (Auto, "6.12.118+deb13-arm64", Aarch64, Fexit),
            (SockOps, "7.2.13+deb14-amd64", X86_64, SockOps),
        ];
        for (asked, release, arch, want) in cases {
            assert_eq!(
                asked.expected(release, arch),
                want,
                "{asked:?} on {release}"
            );
        }
    }

    #[test]
    fn good_run_has_no_problems() {
        let p = parse_console(GOOD);
        assert_eq!(p.kernel.as_deref(), Some(RELEASE));
        assert_eq!(p.insmod_ok, ["tun.ko", "toa.ko"]);
        assert_eq!(p.results.len(), 3);
        assert!(p.results.iter().all(|r| r.passed));
        assert_eq!(p.results[0].name, "v4_listener_v4_toa");
        assert_eq!(p.results[0].detail, "getpeername=203.0.113.7:4242");
        assert_eq!(p.runs.len(), 1);
        assert_eq!(p.runs[0].done, Some((3, 0)));
        assert_eq!(p.runs[0].exit, Some(0));
        assert_eq!(p.taint, Some(12288));
        assert!(p.poweroff);
        assert_eq!(p.stats, ["syn_recv_sock_toa=2 syn_recv_sock_no_toa=1"]);
        // The hung-task trace before the mark is the kernel's own, not the module's.
        assert!(p
            .dmesg
            .as_ref()
            .unwrap()
            .iter()
            .any(|l| l.contains("Call Trace")));
        assert_eq!(problems(&p, RELEASE), Vec::<String>::new());
        assert_eq!(
            problems(&p, "6.1.0-49-amd64"),
            ["the guest booted 6.1.0-50-amd64, expected 6.1.0-49-amd64"]
        );
    }

    #[test]
    fn failed_scenario_is_reported_with_detail() {
        let p = parse_console(FAILED);
        let problems = problems(&p, RELEASE);
        assert_eq!(
            problems,
            [
                "scenario no_toa_after_toa failed: getpeername=203.0.113.7:4242, expected 10.0.0.2:5555",
                "the lab program exited with status 1",
            ]
        );
    }

    #[test]
    fn oops_in_dmesg_fails_the_run() {
        let p = parse_console(OOPS);
        let problems = problems(&p, RELEASE);
        assert!(
            problems
                .iter()
                .any(|m| m.starts_with("dmesg: ") && m.contains("general protection")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|m| m.contains("Call Trace")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|m| m.contains("D (kernel died")),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_taint_is_decoded() {
        let p = parse_console(TAINTED);
        assert_eq!(p.taint, Some(12800));
        let problems = problems(&p, RELEASE);
        assert_eq!(
            problems,
            ["kernel tainted 12800: W (kernel issued a warning) (only O and E are acceptable)"]
        );
        assert_eq!(
            decode_taint(12288),
            "O (out-of-tree module loaded), E (unsigned module loaded)"
        );
        assert_eq!(decode_taint(0), "none");
    }

    #[test]
    fn missing_done_and_insmod_failure() {
        let p = parse_console(NO_DONE);
        let problems = problems(&p, RELEASE);
        assert!(problems.contains(&"insmod failed: toa.ko: insmod: can't insert '/lib/modules/toa.ko': invalid module format".to_string()), "{problems:?}");
        assert!(
            problems.contains(&"no TOA-LAB DONE line: the lab program did not finish".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"no complete dmesg section (DMESG-BEGIN/DMESG-END)".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"no TOA-LAB TAINT value".to_string()),
            "{problems:?}"
        );
        assert!(!p.poweroff);
    }

    #[test]
    fn panic_on_the_console_is_reported() {
        let p = parse_console(PANIC);
        let problems = problems(&p, RELEASE);
        assert_eq!(
            problems[..3],
            [
                "console: [    3.402000] BUG: kernel NULL pointer dereference, address: 0000000000000008",
                "console: [    3.402100] Oops: 0000 [#1] PREEMPT SMP NOPTI",
                "console: [    3.402300] Call Trace:",
            ]
        );
        assert!(
            problems
                .iter()
                .any(|m| m.contains("Kernel panic - not syncing")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"no TOA-LAB DONE line: the lab program did not finish".to_string())
        );
        // Boot messages before /init are not the module's doing.
        assert!(
            !problems.iter().any(|m| m.contains("boot-time")),
            "{problems:?}"
        );
    }

    #[test]
    fn empty_console_says_init_never_ran() {
        let problems = problems(&parse_console(""), RELEASE);
        assert_eq!(
            problems[0],
            "the guest never reported its kernel release (did /init run?)"
        );
    }

    #[test]
    fn module_is_taken_from_the_tarball() {
        let dir = crate::testing::scratch("vmtest-tar");
        let tarball = dir.join("Debian-12-x86_64.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, "Debian-12-x86_64/toa.ko", &b"elf"[..])
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let out = dir.join("toa.ko");
        extract_from_tarball(&tarball, "Debian-12-x86_64/toa.ko", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"elf");
        let err = extract_from_tarball(&tarball, "x/toa.ko", &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has no file x/toa.ko") && err.contains("Debian-12-x86_64/toa.ko"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
