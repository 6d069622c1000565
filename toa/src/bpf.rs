//! `toa bpf load|unload`: the module-free mode (kernels >= 5.10), and what
//! the other subcommands need to know of it when it is active.
//!
//! The programs and the loader are the `toa-bpf` library; this file is the
//! operator's side of it: flags (and the environment a systemd unit passes),
//! what a load did, and the pinned state as plain data that `status`,
//! `stats`, `health` and `selftest` read like the module's.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use toa_sim::toa_stats::{Counter, Snapshot};

use crate::host::Host;

/// The module-free mode: eBPF programs do toa.ko's job (kernels >= 5.10).
///
/// A capture program reads the TOA of the packet that completes each
/// handshake and keeps the client with the socket (fexit on the kernel's
/// tcp_create_openreq_child where the kernel allows it, else a cgroup
/// sock_ops program); cgroup getpeername programs make accept() and getpeername()
/// return it. They are attached for every process on the machine (the
/// cgroup programs at the cgroup v2 root), or with --cgroup for the
/// processes of one cgroup only, and pinned under /sys/fs/bpf/toa,
/// so they stay after this command exits; `toa status`, `toa stats` and
/// `toa selftest` work in this mode as with toa.ko.
///
/// Limits: an IPv6 client behind an AF_INET listener keeps the proxy's
/// address (counted as getname_family_kept; dual-stack AF_INET6 listeners
/// see it); TCP Fast Open connections and connections established before
/// the load are not rewritten.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    Load(LoadArgs),
    Unload(UnloadArgs),
    Run(RunArgs),
}

/// Load and attach the programs, or, when they are attached already, write
/// the new settings into their maps in place (no detach, no gap). Pins whose
/// links no longer run the programs (detached by other means) are replaced
/// by a fresh load. One load or unload runs at a time (a lock under /run/toa).
///
/// Upgrades: when the attached programs come from another toa (another BPF
/// object), each is replaced in place with this binary's, keeping the maps
/// that hold each open connection's client, so those connections keep it;
/// only when the new programs cannot use those maps is everything loaded
/// afresh, and it says so.
///
/// Refused while toa.ko is loaded (one mode at a time). Mounts the BPF
/// filesystem when needed and finds the cgroup v2 root; on a cgroup v1 host
/// it mounts cgroup2 privately under /run/toa (never over /sys/fs/cgroup,
/// whose v1 controllers stay where they are) and unload removes it. When the
/// kernel refuses the programs, says which feature it lacks: use toa.ko
/// there. Each setting can also come from the environment (TOA_TRUSTED_PROXIES,
/// TOA_FORMATS, TOA_PORTS), which is how a systemd unit's EnvironmentFile
/// passes them.
#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Proxies allowed to set a client address, as CIDRs: 10.0.0.0/8,2001:db8::/32.
    /// Empty: any source may (toa.ko's default; not for origins reachable by others).
    #[arg(long, value_name = "CIDRS", env = "TOA_TRUSTED_PROXIES", default_value = "",
          value_parser = parse_trusted)]
    trusted_proxies: String,
    /// TOA layouts honoured, toa.ko's bitmask: 0x1 254/8 IPv4, 0x2 254/20 IPv6,
    /// 0x4 253/20 IPv6, 0x8 200/8 IPv4.
    #[arg(long, value_name = "MASK", env = "TOA_FORMATS", default_value = "0xf",
          value_parser = parse_formats)]
    formats: u32,
    /// Listener ports whose connections honour TOA: 80,443,8000-8099. Empty: every port.
    #[arg(long, value_name = "LIST", env = "TOA_PORTS", default_value = "",
          value_parser = parse_ports)]
    ports: String,
    /// How the handshake's TOA is taken: fexit (once per accepted connection;
    /// kernels with BTF, a BPF trampoline and socket storage in tracing
    /// programs, 5.11+), sock-ops (the kernel runs it on every TCP callback of
    /// every socket; 5.10+), or auto (fexit where the kernel accepts it).
    #[arg(long, value_name = "PATH", env = "TOA_CAPTURE", default_value = "auto",
          value_parser = toa_bpf::CaptureChoice::parse)]
    capture: toa_bpf::CaptureChoice,
    /// Attach the getpeername programs (and the sock-ops capture) to this
    /// cgroup v2 only: its processes get clients, every other process pays
    /// nothing. A path under the cgroup v2 root, as systemd names a unit's
    /// (`systemctl show -p ControlGroup nginx.service`: /system.slice/nginx.service;
    /// a slice outlives its services' restarts) or absolute under the root's
    /// mount (/sys/fs/cgroup/system.slice). `/`: every process. Without it: the
    /// cgroup the loaded programs are attached to, else every process. With
    /// the fexit capture every accepted connection of the machine still
    /// passes that program once; sock-ops keeps the capture in the cgroup too.
    #[arg(long, value_name = "PATH", env = "TOA_CGROUP",
          value_parser = toa_bpf::CgroupChoice::parse)]
    cgroup: Option<toa_bpf::CgroupChoice>,
    /// The host's cgroup v2 root, mounted here: --cgroup is resolved against
    /// it and the programs attach there. For a container with a private cgroup
    /// namespace (Kubernetes' default on cgroup v2), where every cgroup2 mount
    /// is rooted at the container's own cgroup: mount the host's
    /// /sys/fs/cgroup (/sys/fs/cgroup/unified on a host that also mounts
    /// cgroup v1) into it and name the mount. Without it: the cgroup2 mount
    /// found here, else one toa mounts itself.
    #[arg(long, value_name = "DIR", env = "TOA_CGROUP_ROOT")]
    cgroup_root: Option<std::path::PathBuf>,
}

/// Load as `toa bpf load` does, then wait for SIGTERM or SIGINT: the
/// process a container runs (a Kubernetes DaemonSet's pod).
///
/// The programs are pinned and stay attached whether this process runs or
/// not; when it is stopped they stay too, so that a pod's restart or a
/// rollout leaves every connection its client, unless --unload-on-stop asks
/// to detach them (`toa bpf unload`) on the way out.
#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// On SIGTERM or SIGINT, detach the programs and remove the pins before
    /// exiting (for a DaemonSet being deleted for good). Without it they stay
    /// attached.
    #[arg(long, env = "TOA_UNLOAD_ON_STOP")]
    unload_on_stop: bool,
}

/// Detach the programs and remove every pin under /sys/fs/bpf/toa.
///
/// Open connections get the kernel's answer (the proxy's address) from then
/// on. Succeeds when nothing was loaded.
#[derive(clap::Args, Debug)]
struct UnloadArgs {}

fn parse_trusted(text: &str) -> Result<String, String> {
    toa_bpf::Settings::parse(text, toa_bpf::ALL_FORMATS, "")
        .map(|s| s.trusted_text())
        .map_err(|e| format!("{e:#}"))
}

fn parse_ports(text: &str) -> Result<String, String> {
    toa_bpf::Settings::parse("", toa_bpf::ALL_FORMATS, text)
        .map(|s| s.ports_text())
        .map_err(|e| format!("{e:#}"))
}

/// A mask in decimal or 0x-hex, with no bit outside the four layouts.
pub fn parse_formats(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let mask = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse(),
    }
    .map_err(|_| format!("{text:?} is not a number (decimal or 0x-hex)"))?;
    if mask & !toa_bpf::ALL_FORMATS != 0 {
        return Err(format!(
            "{mask:#x} has bits outside {:#x} (the four TOA layouts)",
            toa_bpf::ALL_FORMATS
        ));
    }
    Ok(mask)
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.action {
        Action::Load(a) => load(a),
        Action::Unload(_) => unload(),
        Action::Run(a) => load_and_wait(a),
    }
}

fn load_and_wait(a: &RunArgs) -> Result<ExitCode> {
    // Blocked before loading: a stop that comes during the load is answered
    // once it is done, never by dying half way.
    let stop = crate::stop_signal::StopSignals::block()?;
    load(&a.load)?;
    if a.unload_on_stop {
        println!("toa: waiting for SIGTERM; then the programs are detached (--unload-on-stop)");
    } else {
        println!("toa: waiting for SIGTERM; the programs stay attached when it comes");
    }
    let signal = stop.wait()?;
    println!("toa: {signal} received");
    if a.unload_on_stop {
        return unload();
    }
    println!(
        "toa: the programs stay attached, pinned under {}; `toa bpf unload` detaches them",
        toa_bpf::PIN_DIR
    );
    Ok(ExitCode::SUCCESS)
}

fn load(a: &LoadArgs) -> Result<ExitCode> {
    if let Some(root) = &a.cgroup_root {
        toa_bpf::use_cgroup2_root(root)?;
    }
    let settings = toa_bpf::Settings::parse(&a.trusted_proxies, a.formats, &a.ports)?;
    let cgroup = a.cgroup.clone().unwrap_or_default();
    let done = toa_bpf::load(&settings, a.capture, &cgroup)?;
    let this = toa_bpf::embedded();
    match &done {
        toa_bpf::Loaded::Attached(_) => {
            println!("toa: eBPF mode attached, pinned under {}", toa_bpf::PIN_DIR);
        }
        toa_bpf::Loaded::Updated(_) => {
            println!(
                "toa: eBPF mode was attached already: settings updated in place (nothing detached)"
            );
        }
        toa_bpf::Loaded::Replaced {
            previous, notes, ..
        } => {
            if previous.as_ref() == Some(&this) {
                println!(
                    "toa: eBPF mode reattached in place, with its maps: open connections keep \
                     their client"
                );
            } else {
                let from = previous
                    .as_ref()
                    .map_or("an earlier toa".to_string(), |p| format!("toa {p}"));
                println!(
                    "toa: eBPF mode replaced in place: the programs of {from} by those of toa \
                     {this}; open connections keep their client"
                );
            }
            for n in notes {
                println!("  note: {n}");
            }
        }
        toa_bpf::Loaded::Reloaded { why, .. } => {
            println!("toa: eBPF mode loaded afresh: {why}");
            eprintln!(
                "toa: warning: the programs could not be replaced in place, so open connections \
                 lost their client (they see the proxy's address); new ones get it"
            );
        }
    }
    let capture = done.capture();
    println!("  capture         = {} ({capture})", capture.word());
    println!("  object          = toa {this}");
    if let Some(s) = toa_bpf::status().ok().flatten() {
        println!("  cgroup          = {}", describe_cgroup(&s));
    }
    let trusted = settings.trusted_text();
    let ports = settings.ports_text();
    println!(
        "  trusted_proxies = {}",
        if trusted.is_empty() {
            "(empty: any source may set a client address)"
        } else {
            &trusted
        }
    );
    println!(
        "  ports           = {}",
        if ports.is_empty() {
            "(empty: listeners on every port)"
        } else {
            &ports
        }
    );
    println!(
        "  formats         = {:#x} ({})",
        settings.formats,
        crate::status::format_names(settings.formats)
    );
    if matches!(done, toa_bpf::Loaded::Attached(_)) {
        println!("  connections established before now keep the proxy's address");
    }
    if trusted.is_empty() {
        eprintln!(
            "toa: warning: no --trusted-proxies: any host that can reach this origin may claim \
             any client address"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn unload() -> Result<ExitCode> {
    if toa_bpf::unload()? {
        println!(
            "toa: eBPF mode detached; {} removed; open connections now see the proxy's address",
            toa_bpf::PIN_DIR
        );
    } else {
        println!("toa: the eBPF mode was not loaded; nothing to remove");
    }
    Ok(ExitCode::SUCCESS)
}

/// The attached eBPF mode as the other subcommands read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    /// toa.ko's syntax; empty: any source.
    pub trusted_proxies: String,
    pub ports: String,
    pub formats: u32,
    pub capture: toa_bpf::Capture,
    /// Why the pinned programs do not run (links detached or attached
    /// elsewhere); empty when they are attached.
    pub problems: Vec<String>,
    /// Where the cgroup programs are attached, as `toa status` shows it.
    pub cgroup: String,
    /// The one cgroup the programs are scoped to (`--cgroup`); `None`: the
    /// cgroup v2 root, every process.
    pub scoped_to: Option<std::path::PathBuf>,
    /// The loaded object next to this binary's, as `toa status` shows it.
    pub object: String,
    /// Whether the loaded object is another than this binary's.
    pub object_differs: bool,
    /// The counters summed over CPUs, in the module's file order.
    pub counters: Snapshot,
}

impl Active {
    fn of(s: toa_bpf::Status) -> Active {
        let cgroup = describe_cgroup(&s);
        Active {
            trusted_proxies: s.settings.trusted_text(),
            ports: s.settings.ports_text(),
            formats: s.settings.formats,
            capture: s.capture,
            problems: s.problems,
            cgroup,
            scoped_to: s.cgroup.clone().filter(|_| s.scoped),
            object: describe_object(s.object.as_ref()),
            object_differs: s.object.as_ref() != Some(&toa_bpf::embedded()),
            counters: Snapshot {
                cpus: s.cpus,
                counters: s
                    .counters
                    .into_iter()
                    .map(|(name, sum)| Counter {
                        name: name.to_string(),
                        sum,
                        values: s.cpus,
                    })
                    .collect(),
            },
        }
    }
}

/// Where the cgroup programs are attached, for people.
fn describe_cgroup(s: &toa_bpf::Status) -> String {
    match &s.cgroup {
        Some(p) if s.scoped => format!(
            "{} (scoped: only its processes get clients and pay the hook)",
            p.display()
        ),
        Some(p) if toa_bpf::is_private_cgroup2(p) => format!(
            "{} (toa's own cgroup2 mount: this host mounts cgroup v1 only)",
            p.display()
        ),
        Some(p) => format!("{} (the cgroup v2 root)", p.display()),
        None => "(no cgroup v2 hierarchy is mounted here)".into(),
    }
}

/// The loaded object next to this binary's.
fn describe_object(loaded: Option<&toa_bpf::Identity>) -> String {
    let this = toa_bpf::embedded();
    match loaded {
        Some(l) if *l == this => format!("toa {l}, this binary's"),
        Some(l) => format!(
            "toa {l}; this binary is toa {this}: `toa bpf load` replaces the programs in place"
        ),
        None => format!(
            "loaded by a toa that does not record it; this binary is toa {this}: `toa bpf load` \
             replaces the programs in place"
        ),
    }
}

/// The eBPF mode if it is attached. Only this machine's own state can be
/// read (pinned maps need BPF system calls): under `--root` it is never seen.
pub fn detect(host: &Host) -> Result<Option<Active>> {
    if !host.is_live() {
        return Ok(None);
    }
    match toa_bpf::pinned() {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot look into {} without root, so whether the eBPF mode is active is unknown; \
             run this as root",
            toa_bpf::PIN_DIR
        ),
        Err(e) => return Err(e).with_context(|| format!("looking into {}", toa_bpf::PIN_DIR)),
    }
    let status = toa_bpf::status().with_context(|| {
        format!(
            "reading the eBPF mode's pinned maps under {} (needs root)",
            toa_bpf::PIN_DIR
        )
    })?;
    Ok(status.map(Active::of))
}

/// Whether the eBPF mode's pins exist (false when they cannot be looked at).
pub fn pinned(host: &Host) -> bool {
    host.is_live() && toa_bpf::pinned().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn formats_take_decimal_or_hex_and_no_unknown_bit() {
        assert_eq!(parse_formats("0xf"), Ok(0xf));
        assert_eq!(parse_formats("9"), Ok(9));
        assert_eq!(parse_formats("0X2"), Ok(2));
        assert!(parse_formats("0x10").unwrap_err().contains("outside 0xf"));
        assert!(parse_formats("").unwrap_err().contains("not a number"));
        assert!(parse_formats("all").is_err());
    }

    #[test]
    fn lists_are_checked_and_normalised() {
        assert_eq!(
            parse_trusted("10.0.0.0/8, 192.0.2.1").as_deref(),
            Ok("10.0.0.0/8,192.0.2.1/32")
        );
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert_eq!(parse_ports("80, 8000-8099").as_deref(), Ok("80,8000-8099"));
        assert!(parse_ports("90-80").unwrap_err().contains("backwards"));
    }

    /// `toa bpf ...` as the command line gives it.
    fn parse(line: &str) -> Result<Action, clap::Error> {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Bpf {
            #[command(subcommand)]
            action: Action,
        }
        Bpf::try_parse_from(std::iter::once("bpf").chain(line.split_whitespace())).map(|b| b.action)
    }

    #[test]
    fn run_takes_the_load_flags_and_keeps_the_programs_unless_asked() {
        let Action::Run(r) = parse(
            "run --cgroup /kubepods.slice --cgroup-root /host/cgroup2 \
                                    --capture sock-ops --trusted-proxies 10.0.0.0/8",
        )
        .unwrap() else {
            panic!("not run")
        };
        assert!(!r.unload_on_stop, "the programs stay unless asked");
        assert_eq!(
            r.load.cgroup,
            Some(toa_bpf::CgroupChoice::Path("/kubepods.slice".into()))
        );
        assert_eq!(
            r.load.cgroup_root.as_deref(),
            Some(Path::new("/host/cgroup2"))
        );
        assert_eq!(r.load.trusted_proxies, "10.0.0.0/8");
        let Action::Run(r) = parse("run --unload-on-stop").unwrap() else {
            panic!("not run")
        };
        assert!(r.unload_on_stop);
        assert!(parse("run --unload-on-stop=yes --cgroup-root").is_err());
        assert!(
            parse("load --unload-on-stop").is_err(),
            "a load does not wait"
        );
    }

    #[test]
    fn a_cgroup_root_that_is_no_cgroup2_mount_is_refused_before_loading() {
        let Action::Load(a) = parse("load --cgroup-root /").unwrap() else {
            panic!("not load")
        };
        let e = load(&a).unwrap_err();
        assert!(
            format!("{e:#}").contains("/ is not a cgroup v2 mount"),
            "{e:#}"
        );
    }

    #[test]
    fn status_becomes_a_snapshot_in_counter_order() {
        let a = Active::of(toa_bpf::Status {
            settings: toa_bpf::Settings::parse("10.0.0.0/8", 0x3, "443").unwrap(),
            capture: toa_bpf::Capture::Fexit,
            problems: vec![],
            cgroup: Some("/sys/fs/cgroup".into()),
            scoped: false,
            object: Some(toa_bpf::embedded()),
            counters: vec![("syn_recv_sock_toa", 5), ("getname_toa_ok", 9)],
            cpus: 2,
        });
        assert_eq!(a.trusted_proxies, "10.0.0.0/8");
        assert_eq!(a.ports, "443");
        assert_eq!(a.formats, 3);
        assert_eq!(a.cgroup, "/sys/fs/cgroup (the cgroup v2 root)");
        assert!(!a.object_differs);
        assert!(a.object.ends_with("this binary's"), "{}", a.object);
        assert_eq!(a.counters.cpus, 2);
        assert_eq!(a.counters.get("getname_toa_ok"), Some(9));
    }
}
