//! The rendered scripts, run on this host without touching it.
//!
//! Each test makes a scratch "machine": `TOA_ROOT` (the scripts' documented
//! test hook) points their files at a directory, and PATH holds only stub
//! kernel commands (`modprobe`, `rmmod`, `depmod`, `uname`, ...), which log
//! their calls and imitate the kernel under that directory, plus links to the
//! ordinary tools the scripts need (sed, tar, curl, ...). A std TcpListener on
//! 127.0.0.1 serves the test's dist directory. Scripts are piped to bash, as
//! operators run them.
//!
//! This file is that machine; the tests are in `installers_tests/`, one file
//! per topic.

#[path = "installers_tests/choosing.rs"]
mod choosing;
#[path = "installers_tests/compile.rs"]
mod compile;
#[path = "installers_tests/ebpf.rs"]
mod ebpf;
#[path = "installers_tests/install.rs"]
mod install;
#[path = "installers_tests/pinned.rs"]
mod pinned;
#[path = "installers_tests/refusals.rs"]
mod refusals;
#[path = "installers_tests/rendering.rs"]
mod rendering;
#[path = "installers_tests/selftest.rs"]
mod selftest;

use super::*;
use crate::build::package::{write_tarball, KernelModule};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::SystemTime;

const KREL: &str = "6.1.0-99-amd64";
const DIST_NAME: &str = "Debian-12-x86_64";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Commands whose calls change a machine; the others only read.
const MUTATING: &[&str] = &[
    "insmod",
    "rmmod",
    "modprobe",
    "depmod",
    "systemctl",
    "make",
    "gcc",
    "apt-get",
    "yum",
    "dnf",
    "zypper",
];

/// Real tools the scripts (and the stubs) may use.
const TOOLS: &[&str] = &[
    "bash",
    "sh",
    "cat",
    "sed",
    "grep",
    "tar",
    "gzip",
    "curl",
    "mkdir",
    "cp",
    "mv",
    "rm",
    "chmod",
    "mktemp",
    "tail",
    "awk",
    "sort",
    "od",
    "env",
    "tr",
    "find",
    "head",
    "sha256sum",
    "ln",
    "ls",
    "rmdir",
];

/// A toa.ko stand-in: just the `.modinfo` strings the modinfo stub reads.
fn fake_ko(vermagic_release: &str, srcversion: &str) -> Vec<u8> {
    format!(
        "\x7fELF stand-in\0name=toa\0version={VERSION}\0srcversion={srcversion}\0\
         vermagic={vermagic_release} SMP preempt mod_unload modversions \0"
    )
    .into_bytes()
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn bash() -> PathBuf {
    which("bash").expect("bash")
}

const STUB_LOG: &str = r#"printf '%s\n' "${0##*/} $*" >>"$TOA_STUB_LOG""#;

/// Stub bodies (after the logging line).
const STUBS: &[(&str, &str)] = &[
    (
        "uname",
        r#"case ${1:-} in
    -r) echo "$TOA_TEST_KREL" ;;
    -m) echo "${TOA_TEST_ARCH:-x86_64}" ;;
    -v) echo '#1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2025-01-01)' ;;
    *) echo Linux ;;
esac"#,
    ),
    ("id", "echo 0"),
    (
        "modinfo",
        r#"field="" file=""
while [ $# -gt 0 ]; do
    case $1 in -F) field=$2; shift ;; *) file=$1 ;; esac
    shift
done
[ -f "$file" ] || { echo "modinfo: ERROR: Module $file not found." >&2; exit 1; }
tr '\0' '\n' <"$file" | sed -n "s/^$field=//p""#,
    ),
    (
        "modprobe",
        r#"[ "$1" = toa ] || exit 1
if [ -n "${TOA_TEST_MODPROBE_FAIL:-}" ]; then
    echo "modprobe: ERROR: could not insert 'toa': Key was rejected by service" >&2
    exit 1
fi
ko=$(find "$TOA_ROOT/lib/modules/$TOA_TEST_KREL" -name toa.ko | sort | head -n 1)
[ -n "$ko" ] || { echo "modprobe: FATAL: Module toa not found" >&2; exit 1; }
[ -d "$TOA_ROOT/sys/module/toa" ] && exit 0
mkdir -p "$TOA_ROOT/sys/module/toa" "$TOA_ROOT/proc/net"
tr '\0' '\n' <"$ko" | sed -n 's/^srcversion=//p' >"$TOA_ROOT/sys/module/toa/srcversion"
printf '                     CPU0\nsyn_recv_sock_toa    : 0\n' >"$TOA_ROOT/proc/net/toa_stats"
# The module arms the listeners open at load (two: say sshd's and nginx's).
printf 'armed_at_load: 2\nunarmed: 0\n' >"$TOA_ROOT/proc/net/toa_listeners""#,
    ),
    (
        "rmmod",
        // A pinned toa.ko holds a reference to itself: the kernel says EBUSY.
        r#"[ -d "$TOA_ROOT/sys/module/toa" ] || { echo "rmmod: ERROR: Module toa is not currently loaded" >&2; exit 1; }
if [ -n "${TOA_TEST_RMMOD_BUSY:-}" ] || grep -Eq '^pinned *: *1' "$TOA_ROOT/proc/net/toa_stats" 2>/dev/null; then
    echo "rmmod: ERROR: Module toa is in use" >&2
    exit 1
fi
rm -rf "$TOA_ROOT/sys/module/toa" "$TOA_ROOT/proc/net/toa_stats" "$TOA_ROOT/proc/net/toa_listeners""#,
    ),
    (
        "lsmod",
        r#"echo "Module                  Size  Used by"
if [ -d "$TOA_ROOT/sys/module/toa" ]; then echo "toa                    16384  0"; fi"#,
    ),
    ("depmod", ""),
    ("insmod", ""),
    (
        "systemctl",
        r#"cmd="" unit=""
for a in "$@"; do
    case $a in -*) ;; *) if [ -z "$cmd" ]; then cmd=$a; else unit=$a; fi ;; esac
done
wants=$TOA_ROOT/etc/systemd/system/multi-user.target.wants
case $cmd in
    is-enabled) [ -L "$wants/$unit" ] ;;
    enable) mkdir -p "$wants" && ln -sf "/etc/systemd/system/$unit" "$wants/$unit" ;;
    disable) rm -f "$wants/$unit" ;;
esac"#,
    ),
    (
        "mokutil",
        r#"if [ -n "${TOA_TEST_SECURE_BOOT:-}" ]; then echo 'SecureBoot enabled'; else echo 'SecureBoot disabled'; fi"#,
    ),
    ("gcc", ""),
    (
        "make",
        r#"dir=.
while [ $# -gt 0 ]; do case $1 in -C) dir=$2; shift ;; esac; shift; done
[ -f "$dir/Kbuild" ] || { echo "make: no Kbuild in $dir" >&2; exit 2; }
# Like a real build, the bytes differ from build to build (the build path is in them).
printf '\177ELF stand-in\0name=toa\0version=v\0srcversion=BUILT\0vermagic=%s SMP preempt \0built-in=%s\0' "$TOA_TEST_KREL" "$dir" >"$dir/toa.ko""#,
    ),
    (
        "apt-get",
        r#"case " $* " in *" install "*) mkdir -p "$TOA_ROOT/lib/modules/$TOA_TEST_KREL/build" && : >"$TOA_ROOT/lib/modules/$TOA_TEST_KREL/build/Makefile" ;; esac"#,
    ),
];

/// A DKMS stand-in keeping its state under $TOA_ROOT/var/lib/dkms.
const DKMS_STUB: &str = r#"cmd=$1; shift
v="" k=""
while [ $# -gt 0 ]; do case $1 in -v) v=$2; shift ;; -k) k=$2; shift ;; esac; shift; done
state=$TOA_ROOT/var/lib/dkms/toa
case $cmd in
    status)
        for d in "$state"/*/; do
            [ -d "$d" ] || continue
            ver=${d%/}; ver=${ver##*/}
            [ -z "$v" ] || [ "$v" = "$ver" ] || continue
            if [ -f "$d/installed" ]; then echo "toa/$ver, $TOA_TEST_KREL, x86_64: installed"; else echo "toa/$ver: added"; fi
        done ;;
    add) [ -f "$TOA_ROOT/usr/src/toa-$v/dkms.conf" ] || exit 1; mkdir -p "$state/$v" ;;
    build)
        mkdir -p "$state/$v/$k/x86_64/module"
        printf '\177ELF stand-in\0name=toa\0srcversion=DKMS\0vermagic=%s SMP \0' "$k" >"$state/$v/$k/x86_64/module/toa.ko" ;;
    install)
        mkdir -p "$TOA_ROOT/lib/modules/$k/updates/dkms"
        cp "$state/$v/$k/x86_64/module/toa.ko" "$TOA_ROOT/lib/modules/$k/updates/dkms/toa.ko"
        : >"$state/$v/installed" ;;
    remove) rm -rf "${state:?}/$v"; rm -f "$TOA_ROOT"/lib/modules/*/updates/dkms/toa.ko ;;
esac"#;

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
    /// Every stub call, `name args...`.
    calls: Vec<String>,
}

impl Outcome {
    fn mutating(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| {
                let mut words = c.split_whitespace();
                let cmd = words.next().unwrap_or("");
                let sub = words.next();
                (MUTATING.contains(&cmd) && !(cmd == "systemctl" && sub == Some("is-enabled")))
                    || (cmd == "dkms" && sub != Some("status"))
                    || (cmd == "toa" && sub == Some("bpf"))
            })
            .cloned()
            .collect()
    }

    fn text(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}--- calls\n{}",
            self.stdout,
            self.stderr,
            self.calls.join("\n")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(SystemTime),
    File(Vec<u8>, SystemTime, u32),
    Link(PathBuf),
}

type Tree = BTreeMap<PathBuf, Node>;

fn snapshot(root: &Path) -> Tree {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Tree::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let node = if meta.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                todo.push(path.clone());
                Node::Dir(meta.modified().unwrap())
            } else {
                Node::File(
                    std::fs::read(&path).unwrap(),
                    meta.modified().unwrap(),
                    meta.permissions().mode(),
                )
            };
            out.insert(rel, node);
        }
    }
    out
}

fn files(tree: &Tree) -> Vec<&PathBuf> {
    tree.iter()
        .filter(|(_, n)| !matches!(n, Node::Dir(_)))
        .map(|(p, _)| p)
        .collect()
}

/// Serves `dir` over HTTP on 127.0.0.1 (GET of a file name; 404 otherwise).
fn serve(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let _ = respond(&mut stream, &dir);
            });
        }
    });
    port
}

fn respond(stream: &mut std::net::TcpStream, dir: &Path) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    // Files are published under /toa/, as on a real download server.
    let name = head
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/toa/"))
        .unwrap_or("");
    let body = if !name.is_empty() && !name.contains('/') && !name.starts_with('.') {
        std::fs::read(dir.join(name)).ok()
    } else {
        None
    };
    match body {
        Some(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    stream.flush()
}

/// One scratch machine and the dist directory it installs from.
struct Lab {
    dir: PathBuf,
    root: PathBuf,
    dist: PathBuf,
    bin: PathBuf,
    tmp: PathBuf,
    log: PathBuf,
    base_url: String,
    env: Vec<(String, String)>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir = crate::testing::scratch(&format!("installers-{name}"));
        let (root, dist, bin, tmp) = (
            dir.join("root"),
            dir.join("dist"),
            dir.join("bin"),
            dir.join("tmp"),
        );
        for d in [&root, &dist, &bin, &tmp] {
            std::fs::create_dir_all(d).unwrap();
        }
        let port = serve(dist.clone());
        let base_url = format!("http://127.0.0.1:{port}/toa");
        let lab = Lab {
            log: dir.join("calls.log"),
            dir,
            root,
            dist,
            bin,
            tmp,
            base_url,
            env: Vec::new(),
        };
        lab.tools();
        for (name, body) in STUBS {
            lab.stub(name, body);
        }
        // A Debian 12 machine with systemd.
        lab.write(
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        std::fs::create_dir_all(lab.root.join("run/systemd/system")).unwrap();
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{KREL}/kernel"))).unwrap();
        write_installers(&lab.dist, &lab.base_url).unwrap();
        lab
    }

    fn tools(&self) {
        for tool in TOOLS {
            // The scripts take wget where there is no curl.
            let (name, real) = match (*tool, which(tool)) {
                (_, Some(real)) => (*tool, real),
                ("curl", None) => ("wget", which("wget").expect("curl or wget")),
                (_, None) => panic!(
                    "the installer tests need `{tool}` on this host: apt-get install -y {tool}"
                ),
            };
            std::os::unix::fs::symlink(real, self.bin.join(name)).unwrap();
        }
    }

    fn stub(&self, name: &str, body: &str) {
        let path = self.bin.join(name);
        let _ = std::fs::remove_file(&path);
        std::fs::write(
            &path,
            format!("#!{}\n{STUB_LOG}\n{body}\n", bash().display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read(self.root.join(rel))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Publishes one per-distro tarball with these modules, then the index.
    fn publish(&self, modules: &[KernelModule]) {
        write_tarball(&self.dist, DIST_NAME, "debian-12", "x86_64", modules).unwrap();
        index::write_index(&self.dist).unwrap();
    }

    fn script(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dist.join(name)).unwrap()
    }

    fn run(&self, name: &str, args: &[&str]) -> Outcome {
        self.pipe(&self.script(name), args)
    }

    /// `cat script | bash -s -- args` on the scratch machine.
    fn pipe(&self, script: &[u8], args: &[&str]) -> Outcome {
        let _ = std::fs::remove_file(&self.log);
        let mut cmd = Command::new(bash());
        cmd.arg("-s")
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", &self.bin)
            .env("TOA_ROOT", &self.root)
            .env("TOA_STUB_LOG", &self.log)
            .env("TOA_TEST_KREL", KREL)
            .env("TMPDIR", &self.tmp)
            .env("HOME", &self.dir)
            .env("LC_ALL", "C")
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let script = script.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&script);
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let calls = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let tmp_left: Vec<_> = std::fs::read_dir(&self.tmp).unwrap().collect();
        let outcome = Outcome {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            calls,
        };
        assert!(
            tmp_left.is_empty(),
            "temporary files left behind: {tmp_left:?}\n{}",
            outcome.text()
        );
        outcome
    }

    fn cleanup(self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

fn standard_module() -> KernelModule {
    KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC1"))
}

const MODULE_PATH: &str = "lib/modules/6.1.0-99-amd64/updates/toa.ko";
const MODULES_LOAD: &str = "etc/modules-load.d/toa.conf";

/// Asserts a refused run: failed, said why, called nothing that changes the
/// machine and left its files as they were.
fn assert_refused(lab: &Lab, out: &Outcome, before: &Tree, message: &str) {
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr.contains(message),
        "expected {message:?}\n{}",
        out.text()
    );
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(&snapshot(&lab.root), before, "{}", out.text());
    assert!(
        out.stderr.contains("nothing"),
        "says nothing changed: {}",
        out.text()
    );
}

/// A toa.tar.gz for the compile path (stand-in objects; the real build is
/// proven in source.rs's chroot test).
fn publish_source(lab: &Lab) {
    let objects: Vec<PathBuf> = ["plain", "rethunk"]
        .iter()
        .map(|f| {
            let p = lab.dir.join(format!("toa_core-x86_64-{f}.o"));
            std::fs::write(&p, f).unwrap();
            p
        })
        .collect();
    crate::release::source::write_source_tarball(&lab.dist, &objects).unwrap();
    index::write_index(&lab.dist).unwrap();
}

const TOA_COMMAND: &str = "usr/local/sbin/toa";

/// Publishes a stand-in for the operator's `toa` command whose self-test
/// prints `lines` and exits `status`.
fn publish_toa_command(lab: &Lab, lines: &str, status: i32) {
    let body = format!(
        "#!{}\n{STUB_LOG}\nprintf '%s\\n' {}\nexit {status}\n",
        bash().display(),
        lines
            .lines()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::fs::write(lab.dist.join("toa-x86_64"), body).unwrap();
}

/// Publishes a stand-in for the `toa` command that imitates the eBPF mode
/// under $TOA_ROOT: `bpf load` pins and attaches (and records the settings
/// it got from the environment), `bpf unload` unpins; removing `attached`
/// from the pins stands for links detached by other means, which `status`
/// and `selftest` then fail on; it refuses like the real one
/// when toa.ko is loaded, and like a kernel without the needed feature when
/// TOA_TEST_BPF_REFUSE is set. `selftest` fails when TOA_TEST_SELFTEST_FAIL is.
fn publish_bpf_toa_command(lab: &Lab) {
    let body = format!(
        r#"#!{}
{STUB_LOG}
pins=$TOA_ROOT/sys/fs/bpf/toa
case "$1 ${{2:-}}" in
    "--version "*) echo "toa {VERSION}" ;;
    "bpf load")
        if [ -d "$TOA_ROOT/sys/module/toa" ]; then
            echo "toa: error: toa.ko is loaded; the eBPF mode and toa.ko do not go together (rmmod toa first)" >&2
            exit 1
        fi
        if [ -n "${{TOA_TEST_BPF_REFUSE:-}}" ]; then
            echo "toa: error: the kernel refused the sock_ops program: it lacks bpf_load_hdr_opt (Linux 5.10); use toa.ko" >&2
            exit 1
        fi
        mkdir -p "$pins/links"
        : >"$pins/attached"
        printf '%s\n' "${{TOA_TRUSTED_PROXIES:-any}}" >"$pins/trusted_proxies"
        printf 'ports=%s formats=%s capture=%s\n' "${{TOA_PORTS:-any}}" "${{TOA_FORMATS:-0xf}}" "${{TOA_CAPTURE:-auto}}" >"$pins/settings"
        printf '%s\n' "${{TOA_CGROUP:-kept}}" >"$pins/cgroup"
        echo "attached at the cgroup v2 root; pinned under /sys/fs/bpf/toa" ;;
    "bpf unload") rm -rf "$pins" ;;
    "selftest "*)
        echo "mode: eBPF"
        if [ -n "${{TOA_TEST_SELFTEST_FAIL:-}}" ] || {{ [ -d "$pins" ] && [ ! -f "$pins/attached" ]; }}; then
            echo "FAIL v4-toa-on-inet: expected [AF_INET 198.51.100.7:41001 len=16]"
            exit 1
        fi
        echo "PASS v4-toa-on-inet: ok"
        echo "selftest: 4 passed, 0 failed, 0 skipped" ;;
    "status "*)
        echo "mode: eBPF (pinned under /sys/fs/bpf/toa)"
        if [ -d "$pins" ] && [ ! -f "$pins/attached" ]; then
            echo "  FAIL the eBPF mode is pinned under /sys/fs/bpf/toa but does not run: toa_getpeername4 is detached"
            exit 1
        fi ;;
    *) exit 2 ;;
esac
"#,
        bash().display()
    );
    std::fs::write(lab.dist.join("toa-x86_64"), body).unwrap();
}

fn has_call(out: &Outcome, call: &str) -> bool {
    out.calls.iter().any(|c| c == call)
}
