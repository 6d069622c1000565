//! `cargo xtask vm-install-test`: the installers proven in a Debian guest with
//! a real root filesystem, booted on its own kernel under QEMU.
//!
//! * The guest: a debootstrap'd rootfs (systemd, curl, kmod, gcc, make, dkms,
//!   the kernel and its headers) as an ext4 disk, cached ([`image`]). Each run
//!   boots a fresh copy of it several times; the disk keeps its state between
//!   those boots.
//! * The host builds the prebuilt module (`build`), the source tarball
//!   (`source`) and the installers (`installers`) for a base URL on a loopback
//!   port, and serves them with [`server`]; QEMU's user network shows that
//!   port to the guest as 10.0.2.2. The guest has no default route.
//! * A systemd unit baked into the image runs `stage.sh` from a tar on the
//!   second disk at every boot: the kernel command line says which stage. It
//!   writes `TOA-INSTALL` lines to the second serial port (a file on the
//!   host) and powers off; [`parse_results`] and [`judge`] decide.
//! * A service listening from boot: nginx (enabled in the image) serves port
//!   80 before any installer runs. The tar also holds the static lab program
//!   `toa-lab`, whose `request` plays an L4 proxy in front of it (a TUN
//!   device of its own): before the install nginx must log the proxy, after
//!   it (same nginx process, never restarted) the client in the TOA.
//!
//! The release served holds the operator's `toa` command (`toa-x86_64`), so
//! every install runs `toa selftest` as an operator's would.
//!
//! Damaged downloads are served under other paths of the same server:
//! `corrupt/` (the per-distro tarball and toa.tar.gz with one byte flipped,
//! the published checksums unchanged), `vermagic/` (an index whose entry for
//! the running kernel ships a toa.ko whose vermagic names another kernel),
//! `norewrite/` (a whole release whose toa.ko is the test-only build that
//! loads but never rewrites, `toa_test_build=no-rewrite` in its modinfo: the
//! installer's self-test must refuse it) and `truncated/install_toa.sh` (the
//! first half of the script).
//!
//! Files: `target/vm-install/<distro>/` (`<distro>-bpf/` with `--mode bpf`)
//! holds the run: disk copy, served files, console and result logs.

mod image;
mod server;

use crate::distro::Distro;
use crate::host::needs::{self, Needs};
use crate::{
    build::index, build::package, host::cache, objects::kmod, objects::lab_programs,
    objects::operator_cli, release::installers, release::source, vm::qemu,
};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STAGE_SCRIPT: &str = include_str!("vm_install/stage.sh");

#[derive(clap::Args)]
pub struct Args {
    /// Debian release of the guest: its rootfs, its kernel and the prebuilt module for it.
    #[arg(long, default_value = "debian-12", value_parser = crate::distro::recipe::parse)]
    pub distro: crate::distro::Recipe,
    /// Kill one boot of the guest after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Leave out DKMS: no compile_install_toa.sh with dkms, two boots fewer.
    #[arg(long)]
    pub no_dkms: bool,
    /// Use KVM when /dev/kvm is usable (also TOA_KVM=1); the default is TCG.
    #[arg(long)]
    pub kvm: bool,
    /// What the installer installs in the guest: `kmod` (toa.ko prebuilt and
    /// compiled, the damaged and test-only releases refused) or `bpf` (the
    /// eBPF mode: install, reboot, restored by its unit, uninstall, reboot).
    #[arg(long, value_enum, default_value_t = Mode::Kmod)]
    pub mode: Mode,
}

/// Which of the installers' modes a run proves: the lab's two modes.
pub use crate::vm::vm_test::Mode;

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Kmod => "kmod",
            Mode::Bpf => "bpf",
        }
    }

    /// The boots of a run in this mode.
    pub fn stages(self) -> &'static [Stage] {
        match self {
            Mode::Kmod => STAGES,
            Mode::Bpf => BPF_STAGES,
        }
    }
}

/// One boot of the guest and the checks `stage.sh` reports in it.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub number: u32,
    pub title: &'static str,
    pub checks: &'static [&'static str],
    /// Only with DKMS.
    pub dkms: bool,
}

pub const STAGES: &[Stage] = &[
    Stage {
        number: 1,
        title: "fresh guest",
        checks: &[
            "pristine",
            // nginx, listening from boot, logs the proxy: no toa yet.
            "nginx_before_install",
            "truncated",
            "corrupt_tarball",
            "other_kernel",
            "corrupt_source",
            "selftest_rollback",
            "install",
            // The same nginx, not restarted, logs the client: toa.ko armed
            // the listeners that were open when it loaded.
            "nginx_after_install",
        ],
        dkms: false,
    },
    Stage {
        number: 2,
        title: "reboot after install",
        checks: &[
            "loaded_at_boot",
            "install_run_2",
            "install_run_3",
            "uninstall",
        ],
        dkms: false,
    },
    Stage {
        number: 3,
        title: "reboot after uninstall",
        checks: &["stays_uninstalled", "compile"],
        dkms: false,
    },
    Stage {
        number: 4,
        title: "reboot after DKMS install",
        checks: &[
            "dkms_loaded_at_boot",
            "compile_dkms_again",
            "dkms_uninstall",
        ],
        dkms: true,
    },
    Stage {
        number: 5,
        title: "reboot after DKMS uninstall",
        checks: &["dkms_stays_uninstalled"],
        dkms: true,
    },
];

/// `--mode bpf`: the eBPF mode through its whole life.
pub const BPF_STAGES: &[Stage] = &[
    Stage {
        number: 1,
        title: "fresh guest, eBPF mode",
        checks: &["pristine", "bpf_install"],
        dkms: false,
    },
    Stage {
        number: 2,
        title: "reboot after the eBPF install",
        checks: &["bpf_restored_at_boot", "bpf_install_again", "bpf_uninstall"],
        dkms: false,
    },
    Stage {
        number: 3,
        title: "reboot after the eBPF uninstall",
        checks: &["bpf_stays_uninstalled"],
        dkms: false,
    },
];

/// Checks a stage reports only with DKMS, by stage.
const DKMS_CHECKS: &[(u32, &str)] = &[(3, "compile_dkms")];

fn expected_checks(stage: &Stage, with_dkms: bool) -> Vec<&'static str> {
    let mut checks = stage.checks.to_vec();
    if with_dkms {
        checks.extend(
            DKMS_CHECKS
                .iter()
                .filter(|(n, _)| *n == stage.number)
                .map(|(_, c)| *c),
        );
    }
    checks
}

impl Args {
    /// Boots a kernel with a module built first, on an ext4 guest disk.
    pub fn needs(&self) -> Result<Needs> {
        Ok(Needs::vm("vm-install-test", true).tools(needs::GUEST_IMAGE))
    }
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    crate::host::require_root("vm-install-test (a chroot for the guest image and the builder)")?;
    let distro = args.distro.distro(None)?;
    distro
        .debian()
        .context("the install test needs a Debian release")?;
    let with_dkms = !args.no_dkms && args.mode == Mode::Kmod;

    // What the host serves: prebuilt module, source, installers.
    let built = crate::build::build_distro(&distro)?;
    let no_rewrite = crate::build::build_test_module(&distro, &built.release)?;
    let objects = kmod::build_all(&cache::cache_dir().join("kmod-objects"))?;
    let toa_command = operator_cli::build_for_lab(distro.arch_kind())?;
    let lab_program = lab_programs::build_lab_program(distro.arch_kind())?;
    let release = built.release.clone();
    let image = image::ensure(&distro, &release)?;
    let prepared = started.elapsed();

    let dir = run_dir(&distro, args.mode);
    eprintln!("vm-install-test: run directory {}", dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let serve = dir.join("serve");
    std::fs::create_dir_all(&serve)?;
    let server = server::Server::start(&serve)?;
    let base = format!("http://10.0.2.2:{}", server.port);
    let site = prepare_site(
        &serve,
        &base,
        &Release {
            built: &built,
            no_rewrite,
            toa_command: &toa_command,
        },
        &distro,
        &objects,
    )?;
    eprintln!(
        "serving {} on 127.0.0.1:{} (the guest's {base}); corrupt, vermagic, norewrite and truncated variants beside it",
        serve.display(),
        server.port
    );

    let disk = dir.join("disk.img");
    let copy_start = Instant::now();
    duct::cmd!("cp", "--sparse=always", &image.disk, &disk)
        .run()
        .context("copying the guest disk")?;
    eprintln!(
        "fresh guest disk: {} ({:.1} s)",
        disk.display(),
        copy_start.elapsed().as_secs_f64()
    );
    let payload = dir.join("payload.tar");
    let lab_bytes = std::fs::read(&lab_program)
        .with_context(|| format!("reading {}", lab_program.display()))?;
    write_payload(
        &payload,
        &[
            ("stage.sh", 0o644, STAGE_SCRIPT.as_bytes().to_vec()),
            (
                "lab.env",
                0o644,
                lab_env(&base, &release, &site.dist_name, with_dkms, args.mode).into_bytes(),
            ),
            ("toa-lab", 0o755, lab_bytes),
        ],
    )?;

    let stages: Vec<&Stage> = args
        .mode
        .stages()
        .iter()
        .filter(|s| with_dkms || !s.dkms)
        .collect();
    let mut boots: Vec<BootReport> = Vec::new();
    for stage in &stages {
        let report = boot_stage(stage, &image, &disk, &payload, &dir, &args, with_dkms)?;
        let failed = !report.problems.is_empty();
        boots.push(report);
        if failed {
            // Later stages build on this one's state.
            break;
        }
    }
    let requests = server.requests();
    drop(server);
    std::fs::write(dir.join("server.log"), requests.join("\n") + "\n")?;

    let total = started.elapsed();
    let summary = Summary {
        release: &release,
        stages: &stages,
        boots: &boots,
        with_dkms,
        prepared,
        total,
        image: &image,
    };
    summary.print();
    summary.check(&dir)
}

/// `target/vm-install/<distro>/` (`<distro>-bpf/` for `--mode bpf`, so
/// both can run at once).
pub fn run_dir(distro: &Distro, mode: Mode) -> PathBuf {
    let name = match mode {
        Mode::Kmod => distro.name.clone(),
        Mode::Bpf => format!("{}-bpf", distro.name),
    };
    cache::target_dir().join("vm-install").join(name)
}

fn lab_env(base: &str, release: &str, dist_name: &str, with_dkms: bool, mode: Mode) -> String {
    format!(
        "BASE={base}\nRELEASE={release}\nDIST_NAME={dist_name}\nWITH_DKMS={}\nMODE={}\n",
        u8::from(with_dkms),
        mode.name()
    )
}

/// What [`prepare_site`] put where.
pub struct Site {
    pub dist_name: String,
}

/// What the host built for the served tree.
pub struct Release<'a> {
    pub built: &'a crate::build::Built,
    /// The test-only module for the guest's kernel (`norewrite/`).
    pub no_rewrite: package::KernelModule,
    /// The operator's command, served as `toa-<arch>`.
    pub toa_command: &'a Path,
}

/// Copies the operator's command into `dir` as the release names it.
fn put_toa_command(dir: &Path, binary: &Path, arch: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dest = dir.join(operator_cli::file_name(arch));
    std::fs::copy(binary, &dest).with_context(|| format!("copying {}", binary.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The served tree: the release as it ships, plus damaged variants.
fn prepare_site(
    serve: &Path,
    base: &str,
    release: &Release,
    distro: &Distro,
    objects: &[PathBuf],
) -> Result<Site> {
    let built = release.built;
    let dist_name = distro.dist_name();
    let tarball_name = format!("{dist_name}.tar.gz");
    std::fs::copy(&built.tarball, serve.join(&tarball_name))
        .with_context(|| format!("copying {}", built.tarball.display()))?;
    source::write_source_tarball(serve, objects)?;
    installers::write_installers(serve, base)?;
    put_toa_command(serve, release.toa_command, &distro.arch)?;
    index::write_index(serve)?;

    // corrupt/: the published index and checksums, damaged downloads.
    let corrupt = serve.join("corrupt");
    std::fs::create_dir_all(&corrupt)?;
    for name in [index::INDEX, index::SUMS] {
        std::fs::copy(serve.join(name), corrupt.join(name))?;
    }
    for name in [tarball_name.as_str(), index::SOURCE_TARBALL] {
        let mut bytes = std::fs::read(serve.join(name))?;
        flip_byte(&mut bytes);
        std::fs::write(corrupt.join(name), bytes)?;
    }

    // vermagic/: an index entry for the running kernel whose toa.ko says
    // another kernel; its checksums are right.
    let vermagic = serve.join("vermagic");
    let ko = package::read_from_tarball(&built.tarball, &built.ko_in_tarball)?;
    let (other, patched) = with_other_vermagic(&ko, &built.release)?;
    package::write_tarball(
        &vermagic,
        &dist_name,
        &distro.name,
        &distro.arch,
        &[package::KernelModule::new(
            &built.release,
            &built.kernel_version,
            patched,
        )],
    )?;
    index::write_index(&vermagic)?;
    eprintln!(
        "vermagic/: toa.ko for {} claims kernel {other}",
        built.release
    );

    // norewrite/: a release like the real one whose toa.ko loads and never
    // rewrites (the test-only build): only the self-test can tell.
    let norewrite = serve.join("norewrite");
    package::write_tarball(
        &norewrite,
        &dist_name,
        &distro.name,
        &distro.arch,
        std::slice::from_ref(&release.no_rewrite),
    )?;
    put_toa_command(&norewrite, release.toa_command, &distro.arch)?;
    index::write_index(&norewrite)?;

    // truncated/: install_toa.sh cut in the middle.
    let truncated = serve.join("truncated");
    std::fs::create_dir_all(&truncated)?;
    let script = std::fs::read(serve.join("install_toa.sh"))?;
    std::fs::write(
        truncated.join("install_toa.sh"),
        &script[..script.len() / 2],
    )?;
    Ok(Site { dist_name })
}

/// Flips every bit of the byte in the middle.
pub fn flip_byte(bytes: &mut [u8]) {
    let mid = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(mid) {
        *b ^= 0xff;
    }
}

/// A release of the same length as `release` that is not `release`: the last
/// digit of its ABI number moved on (`6.1.0-50-amd64` -> `6.1.0-51-amd64`),
/// or of the release where it has none.
pub fn other_release(release: &str) -> String {
    let bytes = release.as_bytes();
    // The digits right after the first '-': the ABI number or package release.
    let abi_last = release.find('-').and_then(|dash| {
        let digits = bytes[dash + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        (digits > 0).then_some(dash + digits)
    });
    let at = abi_last.or_else(|| bytes.iter().rposition(u8::is_ascii_digit));
    let mut out = bytes.to_vec();
    match at {
        Some(i) => out[i] = b'0' + (out[i] - b'0' + 1) % 10,
        None => out[0] = if out[0] == b'x' { b'y' } else { b'x' },
    }
    String::from_utf8(out).expect("ASCII stays ASCII")
}

/// `ko` with the release in its vermagic replaced by [`other_release`] (same
/// length, so nothing else in the ELF moves).
pub fn with_other_vermagic(ko: &[u8], release: &str) -> Result<(String, Vec<u8>)> {
    let other = other_release(release);
    let needle = format!("vermagic={release} ");
    let at = ko
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .with_context(|| format!("toa.ko has no `{needle}` in .modinfo"))?;
    let mut out = ko.to_vec();
    let start = at + "vermagic=".len();
    out[start..start + release.len()].copy_from_slice(other.as_bytes());
    let vermagic = crate::repo::deb::modinfo_value(&out, "vermagic")?.unwrap_or_default();
    if !vermagic.starts_with(&format!("{other} ")) {
        bail!("patching the vermagic gave {vermagic:?}");
    }
    Ok((other, out))
}

/// A tar of `files` (name, mode, bytes), padded to whole 4 KiB so QEMU takes
/// it as a disk.
fn write_payload(path: &Path, files: &[(&str, u32, Vec<u8>)]) -> Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, &data[..])?;
    }
    let mut bytes = tar.into_inner()?;
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// One `TOA-INSTALL CHECK` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub stage: u32,
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// What one boot wrote to the result port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results {
    pub stage: Option<u32>,
    pub kernel: Option<String>,
    pub uptime: Option<String>,
    pub checks: Vec<Check>,
    /// What each installer run printed, by case.
    pub outputs: BTreeMap<String, Vec<String>>,
    pub ended: bool,
}

pub fn parse_results(text: &str) -> Results {
    let mut r = Results::default();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let Some(rest) = line
            .find("TOA-INSTALL ")
            .map(|at| &line[at + "TOA-INSTALL ".len()..])
        else {
            continue;
        };
        let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "STAGE" => {
                let mut parts = args.split_whitespace();
                r.stage = parts.next().and_then(|n| n.parse().ok());
                for kv in parts {
                    match kv.split_once('=') {
                        Some(("kernel", v)) => r.kernel = Some(v.to_string()),
                        Some(("uptime", v)) => r.uptime = Some(v.to_string()),
                        _ => {}
                    }
                }
            }
            "CHECK" => {
                let mut parts = args.splitn(4, ' ');
                let stage = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let name = parts.next().unwrap_or_default().to_string();
                let status = parts.next().unwrap_or_default();
                let mut detail = parts.next().unwrap_or_default().trim().to_string();
                if status != "PASS" && status != "FAIL" {
                    detail = format!("unrecognised status {status:?} {detail}");
                }
                r.checks.push(Check {
                    stage,
                    name,
                    passed: status == "PASS",
                    detail,
                });
            }
            "OUT" => {
                let (case, text) = args.split_once(' ').unwrap_or((args, ""));
                r.outputs
                    .entry(case.to_string())
                    .or_default()
                    .push(text.to_string());
            }
            "END" => r.ended = true,
            _ => {}
        }
    }
    r
}

/// What is wrong with one boot; empty when it passed.
pub fn judge(
    stage: &Stage,
    with_dkms: bool,
    results: &Results,
    release: &str,
    boot_failure: Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = boot_failure {
        out.push(f);
    }
    match (&results.stage, &results.kernel) {
        (None, _) => out.push(format!(
            "stage {}: the test never started in the guest (no STAGE line)",
            stage.number
        )),
        (Some(n), _) if *n != stage.number => {
            out.push(format!("stage {}: the guest ran stage {n}", stage.number))
        }
        (_, Some(k)) if k != release => out.push(format!(
            "stage {}: the guest booted {k}, expected {release}",
            stage.number
        )),
        _ => {}
    }
    let expected = expected_checks(stage, with_dkms);
    for name in &expected {
        match results.checks.iter().find(|c| c.name == *name) {
            None => out.push(format!("{name}: not reported")),
            Some(c) if !c.passed => out.push(format!("{name}: {}", c.detail)),
            Some(_) => {}
        }
    }
    for c in &results.checks {
        if !expected.contains(&c.name.as_str()) && !c.passed {
            out.push(format!("{}: {}", c.name, c.detail));
        }
    }
    if results.stage.is_some() && !results.ended {
        out.push(format!(
            "stage {}: the test did not finish (no END line)",
            stage.number
        ));
    }
    out
}

/// One boot's outcome.
pub struct BootReport {
    pub stage: Stage,
    pub results: Results,
    pub problems: Vec<String>,
    pub console_log: PathBuf,
    pub results_log: PathBuf,
    /// QEMU start to the test unit's first line.
    pub to_test: Option<Duration>,
    pub elapsed: Duration,
}

fn boot_stage(
    stage: &Stage,
    image: &image::GuestImage,
    disk: &Path,
    payload: &Path,
    dir: &Path,
    args: &Args,
    with_dkms: bool,
) -> Result<BootReport> {
    let n = stage.number;
    let console_log = dir.join(format!("console-{n}.log"));
    let results_log = dir.join(format!("results-{n}.log"));
    for p in [disk, payload, &results_log] {
        if p.to_string_lossy().contains(',') {
            bail!(
                "{} has a comma, which QEMU's options cannot carry",
                p.display()
            );
        }
    }
    std::fs::write(&results_log, "")?;
    let mut boot = qemu::Boot::new(&image.vmlinuz, &image.initrd, &console_log);
    boot.accel = qemu::choose_accel(args.kvm);
    boot.timeout = Duration::from_secs(args.timeout);
    boot.memory_mb = 1024;
    boot.cpus = 2;
    boot.append = format!("root=/dev/vda rw net.ifnames=0 quiet toa_lab.stage={n}");
    boot.extra_args = [
        "-drive".to_string(),
        format!("file={},format=raw,if=virtio,cache=unsafe", disk.display()),
        "-drive".into(),
        format!(
            "file={},format=raw,if=virtio,readonly=on",
            payload.display()
        ),
        "-netdev".into(),
        "user,id=net0,ipv6=off".into(),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
        "-device".into(),
        "virtio-rng-pci".into(),
        "-serial".into(),
        format!("file:{}", results_log.display()),
    ]
    .to_vec();
    eprintln!("==> stage {n}: {}", stage.title);
    let outcome = qemu::boot(&boot)?;
    let text = std::fs::read_to_string(&results_log).unwrap_or_default();
    let results = parse_results(&text);
    let problems = judge(
        stage,
        with_dkms,
        &results,
        &image.release,
        outcome.failure(),
    );
    for c in &results.checks {
        eprintln!(
            "    {:<24} {}  {}",
            c.name,
            if c.passed { "PASS" } else { "FAIL" },
            c.detail
        );
    }
    eprintln!(
        "    boot {:.1} s to the test, {:.1} s in all",
        outcome.to_init.unwrap_or_default().as_secs_f64(),
        outcome.elapsed.as_secs_f64()
    );
    Ok(BootReport {
        stage: *stage,
        results,
        problems,
        console_log,
        results_log,
        to_test: outcome.to_init,
        elapsed: outcome.elapsed,
    })
}

struct Summary<'a> {
    release: &'a str,
    stages: &'a [&'a Stage],
    boots: &'a [BootReport],
    with_dkms: bool,
    prepared: Duration,
    total: Duration,
    image: &'a image::GuestImage,
}

impl Summary<'_> {
    fn failed(&self) -> bool {
        self.boots.len() < self.stages.len() || self.boots.iter().any(|b| !b.problems.is_empty())
    }

    fn print(&self) {
        println!();
        println!("{:<6} {:<24} {:<6} detail", "stage", "check", "result");
        for stage in self.stages {
            let boot = self.boots.iter().find(|b| b.stage.number == stage.number);
            for name in expected_checks(stage, self.with_dkms) {
                let check = boot.and_then(|b| b.results.checks.iter().find(|c| c.name == name));
                let (result, detail) = match (boot, check) {
                    (None, _) => ("-", "not run: an earlier stage failed".to_string()),
                    (Some(_), None) => ("FAIL", "not reported".to_string()),
                    (Some(_), Some(c)) => {
                        (if c.passed { "PASS" } else { "FAIL" }, c.detail.clone())
                    }
                };
                println!("{:<6} {name:<24} {result:<6} {detail}", stage.number);
            }
        }
        // Output of the installer runs whose checks failed.
        for boot in self.boots {
            for c in boot.results.checks.iter().filter(|c| !c.passed) {
                if let Some(lines) = boot.results.outputs.get(&c.name) {
                    println!("\noutput of {} (stage {}):", c.name, boot.stage.number);
                    for line in lines.iter().rev().take(40).rev() {
                        println!("  {line}");
                    }
                }
            }
        }
        println!();
        for boot in self.boots {
            println!(
                "boot {} ({}): {} to the test, {:.1} s in all; guest uptime at the test {} s",
                boot.stage.number,
                boot.stage.title,
                boot.to_test
                    .map(|d| format!("{:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "never".into()),
                boot.elapsed.as_secs_f64(),
                boot.results.uptime.as_deref().unwrap_or("?")
            );
        }
        let image_mb = image::du_mb(&self.image.dir).unwrap_or(0);
        let disk_mb = std::fs::metadata(&self.image.disk)
            .map(|m| m.len() >> 20)
            .unwrap_or(0);
        let cache_mb = image::du_mb(&cache::cache_dir()).unwrap_or(0);
        println!(
            "guest {} under {}: preparation (module, source, image) {:.1} s, boots {:.1} s, total {:.1} s",
            self.release,
            qemu::choose_accel(false).name(),
            self.prepared.as_secs_f64(),
            self.boots.iter().map(|b| b.elapsed.as_secs_f64()).sum::<f64>(),
            self.total.as_secs_f64()
        );
        println!(
            "cache: guest image {image_mb} MB on disk ({disk_mb} MB disk.img, sparse) in {}; whole cache {cache_mb} MB",
            self.image.dir.display()
        );
        let checks: Vec<&Check> = self.boots.iter().flat_map(|b| &b.results.checks).collect();
        let passed = checks.iter().filter(|c| c.passed).count();
        let expected: usize = self
            .stages
            .iter()
            .map(|s| expected_checks(s, self.with_dkms).len())
            .sum();
        println!(
            "vm-install-test: {passed} passed, {} failed",
            expected.saturating_sub(passed)
        );
    }

    fn check(&self, dir: &Path) -> Result<()> {
        if !self.failed() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for boot in self.boots.iter().filter(|b| !b.problems.is_empty()) {
            for p in &boot.problems {
                lines.push(format!("stage {}: {p}", boot.stage.number));
            }
            lines.push(format!(
                "stage {} logs: console {}, results {}",
                boot.stage.number,
                boot.console_log.display(),
                boot.results_log.display()
            ));
        }
        bail!(
            "vm-install-test failed:\n  {}\nrun directory: {}",
            lines.join("\n  "),
            dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: &str = "\
TOA-INSTALL STAGE 1 kernel=6.1.0-50-amd64 uptime=21.37\r
TOA-INSTALL CHECK 1 pristine PASS nothing of toa on the fresh guest\r
TOA-INSTALL OUT nginx_before_install $ /var/lib/toa-lab/toa-lab request --port 80 --client 198.51.100.7:40001 --path '/?toa-lab=nginx_before_install'\r
TOA-INSTALL OUT nginx_before_install HTTP/1.1 200 OK\r
TOA-INSTALL OUT nginx_before_install (exit status 0)\r
TOA-INSTALL CHECK 1 nginx_before_install PASS nginx active from boot (MainPID 412), no toa: access.log shows 10.77.0.2 (the proxy)\r
TOA-INSTALL OUT truncated $ curl -fsSL http://10.0.2.2:1/truncated/install_toa.sh | bash\r
TOA-INSTALL OUT truncated bash: line 400: syntax error: unexpected end of file\r
TOA-INSTALL OUT truncated (exit status 2)\r
TOA-INSTALL CHECK 1 truncated PASS 9000 bytes piped to bash: exit 2, nothing ran, nothing changed\r
TOA-INSTALL CHECK 1 corrupt_tarball PASS exit 1: checksum mismatch for Debian-12-x86_64.tar.gz\r
TOA-INSTALL CHECK 1 other_kernel FAIL no vermagic refusal (exit 0)\r
TOA-INSTALL CHECK 1 corrupt_source PASS exit 1\r
TOA-INSTALL CHECK 1 selftest_rollback PASS exit 1: toa selftest failed: FAIL v4-toa-on-inet\r
TOA-INSTALL CHECK 1 install PASS exit 0\r
TOA-INSTALL CHECK 1 nginx_after_install PASS nginx MainPID 412 since boot, not restarted; armed 2 listeners that were open at load; access.log shows 198.51.100.7 (the client)\r
TOA-INSTALL END 1\r
";

    #[test]
    fn results_are_parsed() {
        let r = parse_results(RESULTS);
        assert_eq!(r.stage, Some(1));
        assert_eq!(r.kernel.as_deref(), Some("6.1.0-50-amd64"));
        assert_eq!(r.uptime.as_deref(), Some("21.37"));
        assert_eq!(r.checks.len(), 9);
        assert_eq!(r.checks[2].name, "truncated");
        assert!(r.checks[2].passed);
        assert_eq!(
            r.checks[2].detail,
            "9000 bytes piped to bash: exit 2, nothing ran, nothing changed"
        );
        assert!(!r.checks[4].passed);
        assert_eq!(r.outputs["nginx_before_install"][1], "HTTP/1.1 200 OK");
        assert_eq!(r.outputs["truncated"].len(), 3);
        assert_eq!(r.outputs["truncated"][2], "(exit status 2)");
        assert!(r.ended);
    }

    #[test]
    fn judge_names_failed_and_missing_checks() {
        let r = parse_results(RESULTS);
        let problems = judge(&STAGES[0], true, &r, "6.1.0-50-amd64", None);
        assert_eq!(problems, ["other_kernel: no vermagic refusal (exit 0)"]);
        let problems = judge(&STAGES[0], true, &r, "6.1.0-49-amd64", None);
        assert_eq!(
            problems[0],
            "stage 1: the guest booted 6.1.0-50-amd64, expected 6.1.0-49-amd64"
        );
        let cut = RESULTS.replace("TOA-INSTALL CHECK 1 install PASS exit 0\r\n", "");
        let cut = cut.replace("TOA-INSTALL END 1\r\n", "");
        let problems = judge(
            &STAGES[0],
            true,
            &parse_results(&cut),
            "6.1.0-50-amd64",
            Some("timed out after 9 s; console log: c".into()),
        );
        assert_eq!(
            problems,
            [
                "timed out after 9 s; console log: c",
                "other_kernel: no vermagic refusal (exit 0)",
                "install: not reported",
                "stage 1: the test did not finish (no END line)",
            ]
        );
        let cut = RESULTS.replace(
            "TOA-INSTALL CHECK 1 nginx_after_install ",
            "TOA-INSTALL OUT x ",
        );
        let problems = judge(
            &STAGES[0],
            true,
            &parse_results(&cut),
            "6.1.0-50-amd64",
            None,
        );
        assert_eq!(
            problems,
            [
                "other_kernel: no vermagic refusal (exit 0)",
                "nginx_after_install: not reported",
            ]
        );
        let problems = judge(&STAGES[1], true, &Results::default(), "x", None);
        assert_eq!(
            problems[0],
            "stage 2: the test never started in the guest (no STAGE line)"
        );
    }

    #[test]
    fn dkms_checks_only_with_dkms() {
        assert_eq!(
            expected_checks(&STAGES[2], false),
            ["stays_uninstalled", "compile"]
        );
        assert_eq!(
            expected_checks(&STAGES[2], true),
            ["stays_uninstalled", "compile", "compile_dkms"]
        );
    }

    #[test]
    fn other_release_keeps_the_length() {
        assert_eq!(other_release("6.1.0-50-amd64"), "6.1.0-51-amd64");
        assert_eq!(other_release("6.1.0-49-amd64"), "6.1.0-40-amd64");
        assert_eq!(
            other_release("3.10.0-327.el7.x86_64"),
            "3.10.0-328.el7.x86_64"
        );
        assert_eq!(other_release("6.12.9"), "6.12.0");
        assert_eq!(other_release("abc"), "xbc");
    }

    #[test]
    fn vermagic_is_replaced_in_place() {
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let sec = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(
            sec,
            b"license=GPL\0vermagic=6.1.0-50-amd64 SMP preempt mod_unload \0name=toa\0",
            1,
        );
        let ko = obj.write().unwrap();
        let (other, patched) = with_other_vermagic(&ko, "6.1.0-50-amd64").unwrap();
        assert_eq!(other, "6.1.0-51-amd64");
        assert_eq!(patched.len(), ko.len());
        assert_eq!(
            crate::repo::deb::modinfo_value(&patched, "vermagic")
                .unwrap()
                .as_deref(),
            Some("6.1.0-51-amd64 SMP preempt mod_unload ")
        );
        let err = with_other_vermagic(&ko, "6.1.0-49-amd64").unwrap_err();
        assert!(
            err.to_string().contains("no `vermagic=6.1.0-49-amd64 `"),
            "{err}"
        );
    }

    #[test]
    fn payload_is_a_tar_in_whole_blocks() {
        let dir = crate::testing::scratch("vi-payload");
        let path = dir.join("payload.tar");
        write_payload(
            &path,
            &[
                ("stage.sh", 0o644, b"echo hi\n".to_vec()),
                ("lab.env", 0o644, b"A=1\n".to_vec()),
                ("toa-lab", 0o755, b"\x7fELF".to_vec()),
            ],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() % 4096, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("stage.sh".to_string(), 0o644),
                ("lab.env".to_string(), 0o644),
                ("toa-lab".to_string(), 0o755),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lab_env_is_shell() {
        assert_eq!(
            lab_env(
                "http://10.0.2.2:8000",
                "6.1.0-50-amd64",
                "Debian-12-x86_64",
                true,
                Mode::Kmod
            ),
            "BASE=http://10.0.2.2:8000\nRELEASE=6.1.0-50-amd64\nDIST_NAME=Debian-12-x86_64\nWITH_DKMS=1\nMODE=kmod\n"
        );
    }

    #[test]
    fn stage_numbers_follow_each_other() {
        for mode in [Mode::Kmod, Mode::Bpf] {
            for (i, stage) in mode.stages().iter().enumerate() {
                assert_eq!(stage.number as usize, i + 1, "{mode:?}");
            }
        }
    }

    /// Every check the host expects has a `verdict` in stage.sh (the
    /// `install_run_N` ones come from one loop).
    #[test]
    fn stage_script_reports_every_expected_check() {
        let names = STAGES
            .iter()
            .chain(BPF_STAGES)
            .flat_map(|s| s.checks.iter().copied())
            .chain(DKMS_CHECKS.iter().map(|(_, c)| *c));
        for name in names {
            let looped = name
                .rsplit_once('_')
                .filter(|(_, n)| n.parse::<u32>().is_ok())
                .map(|(prefix, _)| format!("verdict \"{prefix}_$run\""));
            let reported = STAGE_SCRIPT.contains(&format!("verdict {name} "))
                || looped.is_some_and(|v| STAGE_SCRIPT.contains(&v));
            assert!(reported, "stage.sh has no verdict for {name}");
        }
    }

    #[test]
    fn nginx_is_checked_around_the_install() {
        let checks = STAGES[0].checks;
        let at = |name: &str| checks.iter().position(|c| *c == name).unwrap();
        assert!(at("pristine") < at("nginx_before_install"));
        assert!(at("nginx_before_install") < at("truncated"));
        assert!(at("install") < at("nginx_after_install"));
    }

    #[test]
    fn flip_changes_one_byte() {
        let mut b = vec![1u8, 2, 3, 4];
        flip_byte(&mut b);
        assert_eq!(b, [1, 2, 0xfc, 4]);
    }
}
