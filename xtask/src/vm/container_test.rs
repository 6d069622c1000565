//! `cargo xtask container-test`: the eBPF mode deployed as the Kubernetes
//! DaemonSet deploys it (dist/kubernetes/), proven with this machine's docker
//! engine, never at the host's cgroup v2 root.
//!
//! The loader runs from the image ([`crate::release::container_image`]) as the
//! DaemonSet's pod does: with the capabilities of a privileged pod that a
//! load uses, in a private cgroup namespace (the
//! Kubernetes default on cgroup v2), with the host's cgroup v2 root and a
//! bpffs mounted into it, `toa bpf run` scoped to a cgroup that docker makes
//! for this test (`--cgroup-parent`). The bpffs is one this test mounts in a
//! directory of its own, so the host's /sys/fs/bpf is never touched. Then:
//!
//! - without the host's root named, the load is refused: in the container
//!   the only cgroup v2 "root" is its own cgroup;
//! - stopped (SIGTERM), the loader leaves the programs attached: the pins are
//!   there and each cgroup link is attached to the test's cgroup (bpftool
//!   reads them, not toa);
//! - a server in another container of that cgroup, reached over a veth from
//!   a network namespace this test makes, where the L4-proxy simulator
//!   (`toa-lab request`) plays the proxy: it logs the client of the TOA
//!   connection, and the proxy for a connection without TOA;
//! - a loader started again keeps the programs (settings updated in place)
//!   and, asked to (`TOA_UNLOAD_ON_STOP`), detaches them when stopped.
//!
//! Everything it made goes whatever happens: containers, the network
//! namespace (and the veth with it), the cgroups, the bpffs mount.

use crate::distro::arch::Arch;
use crate::host::needs::{self, Needs};
use crate::{host, objects::lab_programs, release::container_image};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs the eBPF mode's container deployment against this machine's docker
/// engine (root, cgroupfs cgroup driver, a cgroup v2 hierarchy).
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Where the host's cgroup v2 root is mounted in the loader container, as in
/// the DaemonSet.
const HOST_CGROUP2: &str = "/host/cgroup2";
/// The server's port in its container.
const SERVER_PORT: &str = "8080";
/// The veth between the simulator's namespace (`.1`) and the server (`.2`).
const NS_ADDR: &str = "10.78.0.1/24";
const SERVER_ADDR: &str = "10.78.0.2";
const SERVER_CIDR: &str = "10.78.0.2/24";
/// The simulated proxy's address (`toa-lab request`), the one trusted proxy.
const PROXY: &str = "10.77.0.2";
/// The client the TOA names.
const CLIENT: &str = "198.51.100.7:40001";

impl Args {
    /// The docker engine is asked for by the test itself (a service, not a
    /// tool to install).
    pub fn needs(&self) -> Result<Needs> {
        Ok(Needs::new("container-test")
            .rust()
            .tools(needs::CONTAINER_TEST))
    }
}

pub fn run(_args: Args) -> Result<()> {
    host::require_root("container-test (docker, namespaces, BPF)")?;
    let started = Instant::now();
    let driver = docker(&["info", "--format", "{{.CgroupDriver}}"])
        .context("the docker engine is needed (docker info failed)")?;
    // With the systemd driver --cgroup-parent names a slice and the cgroup
    // is elsewhere; this test places its containers by path.
    ensure!(
        driver.trim() == "cgroupfs",
        "container-test needs docker's cgroupfs cgroup driver, this engine uses {}",
        driver.trim()
    );
    let cgroup2 = host_cgroup2_root()?;
    let arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    let image = timed("the image", || container_image::ensure(arch))?;
    let lab = timed("the simulator and server (toa-lab)", || {
        lab_programs::build_static("toa-lab", "toa-lab", arch)
    })?;
    let t = TestRun::new(cgroup2, image, lab)?;
    let outcome = t.prove();
    drop(t);
    outcome?;
    eprintln!(
        "==> container-test passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    eprintln!("==> {what}: {:.1} s", start.elapsed().as_secs_f64());
    Ok(out)
}

/// The test's own things, removed on drop.
struct TestRun {
    /// The host's cgroup v2 root.
    cgroup2: PathBuf,
    image: String,
    lab: PathBuf,
    /// The test cgroup's name, a child of every hierarchy's root.
    name: String,
    /// Its directory in the cgroup v2 hierarchy.
    cgroup: PathBuf,
    base: PathBuf,
    bpffs: PathBuf,
    netns: String,
    mounted: bool,
}

impl TestRun {
    fn new(cgroup2: PathBuf, image: String, lab: PathBuf) -> Result<TestRun> {
        let name = format!("toa-ctest-{}", std::process::id());
        let base = std::env::temp_dir().join(&name);
        let bpffs = base.join("bpffs");
        let mut t = TestRun {
            cgroup: cgroup2.join(&name),
            cgroup2,
            image,
            lab,
            netns: name.clone(),
            name,
            bpffs,
            base,
            mounted: false,
        };
        std::fs::create_dir_all(&t.bpffs)
            .with_context(|| format!("creating {}", t.bpffs.display()))?;
        run_cmd("mount", &["-t", "bpf", "bpf", &path_str(&t.bpffs)])?;
        t.mounted = true;
        Ok(t)
    }

    fn container(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    /// `docker run` arguments of a loader container, as the DaemonSet's pod.
    fn loader_args(&self, role: &str, detach: bool, env: &[(&str, &str)]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into()];
        if detach {
            a.push("-d".into());
        } else {
            a.push("--rm".into());
        }
        let parent = format!("/{}", self.name);
        let bpffs = format!("{}:/sys/fs/bpf", self.bpffs.display());
        let cgroup2 = format!("{}:{HOST_CGROUP2}", self.cgroup2.display());
        a.extend(
            [
                "--name",
                &self.container(role),
                // What the DaemonSet's `privileged: true` gives that a load
                // needs (docker 20.10 knows no CAP_BPF: CAP_SYS_ADMIN stands
                // for it), and no more: an engine whose own bounding set
                // lacks a capability cannot start a --privileged container.
                "--cap-add",
                "SYS_ADMIN",
                "--cap-add",
                "NET_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "--cgroupns=private",
                "--cgroup-parent",
                &parent,
                "--network",
                "none",
                "-v",
                &bpffs,
                "-v",
                &cgroup2,
                "-e",
                "TOA_CAPTURE=sock-ops",
                "-e",
            ]
            .map(String::from),
        );
        a.push(format!("TOA_TRUSTED_PROXIES={PROXY}/32"));
        for (k, v) in env {
            a.push("-e".into());
            a.push(format!("{k}={v}"));
        }
        a.push(self.image.clone());
        a
    }

    fn prove(&self) -> Result<()> {
        timed("a load without the host's cgroup root is refused", || {
            self.refused_without_host_root()
        })?;
        timed(
            "the loader runs, is stopped and leaves the programs",
            || self.loader_leaves_programs(),
        )?;
        timed("the links are attached to the test cgroup", || {
            self.links_at_test_cgroup()
        })?;
        timed("a server in the cgroup logs the TOA client", || {
            self.server_logs_clients()
        })?;
        timed("a loader asked to unload on stop detaches", || {
            self.loader_unloads_when_asked()
        })
    }

    fn refused_without_host_root(&self) -> Result<()> {
        let mut args = self.loader_args("refused", false, &[]);
        args.extend(["bpf", "load"].map(String::from));
        let out = docker_output(&args)?;
        ensure!(
            !out.status.success(),
            "a load in a private cgroup namespace without the host's root succeeded: {}",
            out.text
        );
        ensure!(
            out.text.contains("is a cgroup namespace's"),
            "the refusal does not say why: {}",
            out.text
        );
        ensure!(!out.text.contains("panicked"), "{}", out.text);
        ensure!(
            !self.bpffs.join("toa").exists(),
            "a refused load left pins in the test's bpffs"
        );
        Ok(())
    }

    fn loader_leaves_programs(&self) -> Result<()> {
        let cgroup = format!("/{}", self.name);
        // As the DaemonSet sets them.
        let env = [
            ("TOA_CGROUP", cgroup.as_str()),
            ("TOA_CGROUP_ROOT", HOST_CGROUP2),
            ("TOA_UNLOAD_ON_STOP", "false"),
        ];
        let loader = self.container("loader");
        run_docker(&self.loader_args("loader", true, &env))?;
        let logs = wait_for_log(&loader, "waiting for SIGTERM")?;
        ensure!(
            logs.contains("stay attached when it comes"),
            "the loader would unload on stop: {logs}"
        );
        self.require_in_test_cgroup(&loader)?;
        docker(&["stop", "--time", "10", &loader])?;
        let (code, logs) = exited(&loader)?;
        ensure!(code == 0, "the loader exited with {code}: {logs}");
        ensure!(logs.contains("SIGTERM received"), "{logs}");
        ensure!(
            logs.contains("the programs stay attached, pinned under"),
            "{logs}"
        );
        docker(&["rm", &loader])?;
        Ok(())
    }

    /// A container of the test's cgroup, in a cgroup namespace of its own.
    fn require_in_test_cgroup(&self, container: &str) -> Result<()> {
        let pid = docker(&["inspect", "--format", "{{.State.Pid}}", container])?;
        let pid = pid.trim();
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let v2 = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("");
        // Measured with docker 20.10 (cgroupfs driver) on a host with cgroup
        // v1 controllers and cgroup2 at /sys/fs/cgroup/unified: the container
        // joins /<parent>/<id> in the v2 hierarchy too.
        ensure!(
            v2.starts_with(&format!("/{}/", self.name)),
            "{container} is not under the test cgroup /{} in the cgroup v2 hierarchy but at \
             {v2:?}",
            self.name
        );
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/cgroup")).ok();
        ensure!(
            ns(pid).is_some() && ns(pid) != ns("self"),
            "{container} shares this process's cgroup namespace"
        );
        Ok(())
    }

    fn links_at_test_cgroup(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let want = std::fs::metadata(&self.cgroup)
            .with_context(|| format!("the test cgroup {}", self.cgroup.display()))?
            .ino();
        let root = std::fs::metadata(&self.cgroup2)?.ino();
        ensure!(want != root, "the test cgroup is the root");
        for (program, attach) in [
            ("toa_getpeername4", "cgroup_inet4_getpeername"),
            ("toa_getpeername6", "cgroup_inet6_getpeername"),
            ("toa_sockops", "cgroup_sock_ops"),
        ] {
            let pin = self.bpffs.join("toa").join(format!("link_{program}"));
            let text = run_cmd(
                "bpftool",
                &["--json", "link", "show", "pinned", &path_str(&pin)],
            )
            .with_context(|| format!("the link of {program} is not pinned"))?;
            let link: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("bpftool's answer: {text}"))?;
            ensure!(
                link["cgroup_id"].as_u64() == Some(want),
                "{program}: linked to cgroup {}, not the test cgroup (id {want}): {text}",
                link["cgroup_id"]
            );
            ensure!(
                link["attach_type"].as_str() == Some(attach),
                "{program}: attach type {}, not {attach}",
                link["attach_type"]
            );
        }
        Ok(())
    }

    fn server_logs_clients(&self) -> Result<()> {
        let server = self.container("server");
        let lab = format!("{}:/toa-lab:ro", self.lab.display());
        let parent = format!("/{}", self.name);
        docker(&[
            "run",
            "-d",
            "--name",
            &server,
            "--cgroupns=private",
            "--cgroup-parent",
            &parent,
            "--network",
            "none",
            "-v",
            &lab,
            "--entrypoint",
            "/toa-lab",
            &self.image,
            "serve",
            "--port",
            SERVER_PORT,
        ])?;
        wait_for_log(&server, "listening on port")?;
        self.require_in_test_cgroup(&server)?;
        let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &server])?;
        self.wire(pid.trim())?;
        let with_toa = self.request(Some(CLIENT))?;
        let without = self.request(None)?;
        let logs = docker(&["logs", &server])?;
        let seen: Vec<&str> = logs
            .lines()
            .filter_map(|l| l.strip_prefix("TOA-LAB SERVE accept="))
            .collect();
        ensure!(seen.len() == 2, "the server saw {seen:?}: {logs}");
        ensure!(
            seen[0] == format!("{CLIENT} getpeername={CLIENT}"),
            "the TOA connection (answered {with_toa}) showed {} instead of {CLIENT}",
            seen[0]
        );
        ensure!(
            seen[1].starts_with(&format!("{PROXY}:")),
            "the connection without TOA (answered {without}) showed {} instead of the proxy",
            seen[1]
        );
        eprintln!("    server: {}", seen.join(" | "));
        Ok(())
    }

    /// A veth from the test's network namespace (which forwards) to the
    /// server's, whose default route goes back through it.
    fn wire(&self, server_pid: &str) -> Result<()> {
        let id = std::process::id() % 100_000;
        let (ns_end, server_end) = (format!("tct{id}a"), format!("tct{id}b"));
        run_cmd("ip", &["netns", "add", &self.netns])?;
        run_cmd(
            "ip",
            &[
                "link",
                "add",
                &ns_end,
                "netns",
                &self.netns,
                "type",
                "veth",
                "peer",
                "name",
                &server_end,
                "netns",
                server_pid,
            ],
        )?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.netns];
            all.extend_from_slice(args);
            run_cmd("ip", &all)
        };
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        in_ns(&["ip", "addr", "add", NS_ADDR, "dev", &ns_end])?;
        in_ns(&["ip", "link", "set", &ns_end, "up"])?;
        in_ns(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let in_server = |args: &[&str]| {
            let mut all = vec!["-t", server_pid, "-n"];
            all.extend_from_slice(args);
            run_cmd("nsenter", &all)
        };
        in_server(&["ip", "addr", "add", SERVER_CIDR, "dev", &server_end])?;
        in_server(&["ip", "link", "set", &server_end, "up"])?;
        in_server(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            NS_ADDR.trim_end_matches("/24"),
        ])?;
        Ok(())
    }

    /// One proxied HTTP request from the simulator; its status line.
    fn request(&self, client: Option<&str>) -> Result<String> {
        let lab = path_str(&self.lab);
        let mut args = vec![
            "netns",
            "exec",
            &self.netns,
            &lab,
            "request",
            "--port",
            SERVER_PORT,
            "--to",
            SERVER_ADDR,
            "--step-timeout",
            "5",
        ];
        if let Some(c) = client {
            args.extend(["--client", c]);
        }
        let status = run_cmd("ip", &args)?;
        ensure!(
            status.starts_with("HTTP/1.0 200"),
            "the server answered {status:?}"
        );
        Ok(status.trim().to_string())
    }

    fn loader_unloads_when_asked(&self) -> Result<()> {
        let cgroup = format!("/{}", self.name);
        let env = [
            ("TOA_CGROUP", cgroup.as_str()),
            ("TOA_CGROUP_ROOT", HOST_CGROUP2),
            ("TOA_UNLOAD_ON_STOP", "true"),
        ];
        let loader = self.container("unloader");
        run_docker(&self.loader_args("unloader", true, &env))?;
        let logs = wait_for_log(&loader, "waiting for SIGTERM")?;
        ensure!(
            logs.contains("settings updated in place (nothing detached)"),
            "a restarted loader did not keep the programs: {logs}"
        );
        docker(&["stop", "--time", "10", &loader])?;
        let (code, logs) = exited(&loader)?;
        ensure!(code == 0, "the loader exited with {code}: {logs}");
        ensure!(logs.contains("eBPF mode detached"), "{logs}");
        ensure!(
            !self.bpffs.join("toa").exists(),
            "pins remain after an unload on stop"
        );
        docker(&["rm", &loader])?;
        Ok(())
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let mut rm = vec!["rm".to_string(), "-f".to_string()];
        rm.extend(
            ["refused", "loader", "server", "unloader"]
                .iter()
                .map(|r| self.container(r)),
        );
        let _ = docker_output(&rm);
        if self.bpffs.join("toa").exists() {
            // Detach whatever a failed step left attached.
            let mut args = self.loader_args("cleanup", false, &[]);
            args.extend(["bpf", "unload"].map(String::from));
            match docker_output(&args) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("container-test cleanup: unloading: {}", out.text),
                Err(e) => eprintln!("container-test cleanup: unloading: {e:#}"),
            }
        }
        let _ = run_cmd("ip", &["netns", "del", &self.netns]);
        // Docker leaves the parent it was given in every hierarchy.
        for dir in cgroup_mounts().iter().map(|m| m.join(&self.name)) {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir(&dir) {
                    eprintln!("container-test cleanup: rmdir {}: {e}", dir.display());
                }
            }
        }
        if self.mounted {
            let _ = run_cmd("umount", &[&path_str(&self.bpffs)]);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A command's stdout; an error with its output when it fails.
fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker(args: &[&str]) -> Result<String> {
    run_cmd("docker", args)
}

fn run_docker(args: &[String]) -> Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)
}

struct Output {
    status: std::process::ExitStatus,
    /// stdout then stderr.
    text: String,
}

fn docker_output(args: &[String]) -> Result<Output> {
    let out = duct::cmd("docker", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running docker")?;
    Ok(Output {
        status: out.status,
        text: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    })
}

/// A container's logs (stdout and stderr).
fn logs(container: &str) -> Result<String> {
    let args = ["logs".to_string(), container.to_string()];
    Ok(docker_output(&args)?.text)
}

/// Waits until `container` logs `text`; its logs.
fn wait_for_log(container: &str, text: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = logs(container)?;
        if seen.contains(text) {
            return Ok(seen);
        }
        let running = docker(&["inspect", "--format", "{{.State.Running}}", container])?;
        if running.trim() != "true" {
            bail!("{container} stopped before logging {text:?}: {seen}");
        }
        if Instant::now() > deadline {
            bail!("{container} did not log {text:?} within 60 s: {seen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The exit code and logs of a container that has stopped.
fn exited(container: &str) -> Result<(i32, String)> {
    let code = docker(&["wait", container])?;
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("docker wait {container} answered {code:?}"))?;
    Ok((code, logs(container)?))
}

/// The host's cgroup v2 root: a cgroup2 mount of the hierarchy's root.
fn host_cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let root = mounts_of(&info, "cgroup2")
        .into_iter()
        .next()
        .context("no cgroup v2 hierarchy is mounted here")?;
    // Every cgroup but the root has cgroup.events: this process must not be
    // in a cgroup namespace, whose root would only look like the root.
    ensure!(
        !root.join("cgroup.events").exists(),
        "{} is not the cgroup v2 hierarchy's root (a cgroup namespace?)",
        root.display()
    );
    Ok(root)
}

/// Mount points of every cgroup and cgroup2 hierarchy's root.
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut all = mounts_of(&info, "cgroup");
    all.extend(mounts_of(&info, "cgroup2"));
    all
}

/// Mount points of `fstype` mounts whose root is the filesystem's root
/// (proc(5): `id parent major:minor root mount-point ... - fstype ...`).
fn mounts_of(mountinfo: &str, fstype: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let point = f.get(4)?;
            (right.split(' ').next() == Some(fstype) && f.get(3) == Some(&"/"))
                .then(|| PathBuf::from(point))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_hierarchies_are_found_by_type_and_root() {
        let info = "\
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
89 72 0:38 /../.. /host/cgroup2 rw,relatime - cgroup2 cgroup2 rw
90 72 0:38 /docker /mnt rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            mounts_of(info, "cgroup2"),
            [PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            mounts_of(info, "cgroup"),
            [
                PathBuf::from("/sys/fs/cgroup/systemd"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
            ]
        );
    }
}
