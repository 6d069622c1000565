//! The rendered scripts, run on this host without touching it.
//!
//! Each test makes a scratch "machine": `TOA_ROOT` (the scripts' documented
//! test hook) points their files at a directory, and PATH holds only stub
//! kernel commands (`modprobe`, `rmmod`, `depmod`, `uname`, ...), which log
//! their calls and imitate the kernel under that directory, plus links to the
//! ordinary tools the scripts need (sed, tar, curl, ...). A std TcpListener on
//! 127.0.0.1 serves the test's dist directory. Scripts are piped to bash, as
//! operators run them.

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

#[test]
fn rendering_inlines_lib_and_fills_placeholders() {
    for (name, source) in SCRIPTS {
        let text = render(source, "https://downloads.example.com/toa/").unwrap();
        assert!(!text.contains("@TOA_"), "{name}");
        assert!(!text.contains(LIB_MARKER), "{name}");
        assert!(text.contains("TOA_DEFAULT_BASE_URL='https://downloads.example.com/toa'"));
        assert!(text.contains(&format!("TOA_VERSION='{VERSION}'")));
        assert!(
            text.contains("function verify_sha256 {"),
            "{name} has lib.sh"
        );
        assert_eq!(
            text.lines().last(),
            Some("main \"$@\" || exit 1"),
            "{name} runs nothing before its last line"
        );
    }
    for bad in [
        "ftp://x",
        "https://",
        "https://a b",
        "https://x/'y",
        "https://x/$(id)",
        "example.com",
    ] {
        assert!(check_base_url(bad).is_err(), "{bad} accepted");
    }
    assert!(render("no marker\n", "https://x").is_err());
}

#[test]
fn rendered_scripts_pass_shellcheck() {
    let Some(shellcheck) = which("shellcheck") else {
        panic!("shellcheck is not installed; install it with: sudo apt-get install -y shellcheck");
    };
    let dir = crate::testing::scratch("shellcheck");
    let written = write_installers(&dir, "https://downloads.example.com/toa").unwrap();
    for path in written {
        let out = Command::new(&shellcheck)
            .args(["--shell=bash", "--severity=style"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn install_is_idempotent_and_uninstall_removes_everything() {
    let lab = Lab::new("idempotent");
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);

    let first = lab.run("install_toa.sh", &[]);
    assert!(first.ok, "{}", first.text());
    assert_eq!(
        first.mutating(),
        [&format!("depmod -a {KREL}"), "modprobe toa"],
        "{}",
        first.text()
    );
    assert_eq!(
        std::fs::read(lab.root.join(MODULE_PATH)).unwrap(),
        fake_ko(KREL, "SRC1")
    );
    let conf = lab.read(MODULES_LOAD).unwrap();
    assert_eq!(
        conf.lines().filter(|l| *l == "toa").count(),
        1,
        "modules-load.d: {conf}"
    );
    assert!(lab.root.join("sys/module/toa").is_dir());
    assert!(
        first.stdout.contains("toa                    16384  0"),
        "{}",
        first.text()
    );
    assert!(
        first.stdout.contains("syn_recv_sock_toa"),
        "{}",
        first.text()
    );
    assert!(first
        .stdout
        .contains("verified sha256 of Debian-12-x86_64.tar.gz"));
    assert!(
        first.stdout.contains(
            "toa.ko took over 2 listening sockets that were already open: services already running show the client on their new connections, without a restart"
        ),
        "what is covered from the load on: {}",
        first.text()
    );
    assert!(lab.read("etc/rc.local").is_none(), "no rc.local on systemd");

    let installed = snapshot(&lab.root);
    for round in 2..=3 {
        let again = lab.run("install_toa.sh", &[]);
        assert!(again.ok, "round {round}: {}", again.text());
        assert_eq!(
            again.mutating(),
            Vec::<String>::new(),
            "round {round}: {}",
            again.text()
        );
        assert_eq!(
            snapshot(&lab.root),
            installed,
            "round {round} changed files"
        );
        assert!(again.stdout.contains("already loaded"), "{}", again.text());
    }

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert_eq!(
        removed.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}")],
        "{}",
        removed.text()
    );
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        removed.text()
    );

    let again = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(again.ok, "{}", again.text());
    assert!(again.mutating().is_empty(), "{}", again.text());
    assert!(again.stdout.contains("not installed"), "{}", again.text());
    lab.cleanup();
}

#[test]
fn rc_local_is_used_without_systemd_and_never_duplicated() {
    let lab = Lab::new("rclocal");
    lab.publish(&[standard_module()]);
    std::fs::remove_dir_all(lab.root.join("run/systemd")).unwrap();
    let legacy = format!("insmod /lib/modules/{KREL}/kernel/net/netfilter/ipvs/toa.ko");
    let original = "#!/bin/sh -e\n# rc.local\nservice-start --foo\n\nexit 0\n";
    lab.write(
        "etc/rc.local",
        &format!("#!/bin/sh -e\n# rc.local\nservice-start --foo\n{legacy}\n\nexit 0\n{legacy}\n"),
    );
    lab.write(
        &format!("lib/modules/{KREL}/kernel/net/netfilter/ipvs/toa.ko"),
        "old",
    );

    for round in 1..=3 {
        let out = lab.run("install_toa.sh", &[]);
        assert!(out.ok, "round {round}: {}", out.text());
        let rc = lab.read("etc/rc.local").unwrap();
        let ours: Vec<&str> = rc
            .lines()
            .filter(|l| l.starts_with("modprobe toa"))
            .collect();
        assert_eq!(ours.len(), 1, "round {round}: {rc}");
        assert!(!rc.contains("insmod"), "legacy lines stay: {rc}");
        assert!(
            rc.ends_with(&format!("{}\nexit 0\n", ours[0])),
            "our line goes before the final exit 0: {rc}"
        );
        assert!(rc.starts_with("#!/bin/sh -e\n# rc.local\nservice-start --foo\n"));
        assert!(lab.read(MODULES_LOAD).is_none());
    }
    assert!(!lab
        .root
        .join(format!(
            "lib/modules/{KREL}/kernel/net/netfilter/ipvs/toa.ko"
        ))
        .exists());

    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(lab.read("etc/rc.local").unwrap(), original);
    assert!(!lab.root.join(MODULE_PATH).exists());
    lab.cleanup();
}

#[test]
fn rc_local_is_created_when_missing() {
    let lab = Lab::new("rcnew");
    lab.publish(&[standard_module()]);
    std::fs::remove_dir_all(lab.root.join("run/systemd")).unwrap();
    let out = lab.run("install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    let rc = lab.read("etc/rc.local").unwrap();
    assert!(rc.starts_with("#!/bin/sh\nmodprobe toa"), "{rc}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(lab.root.join("etc/rc.local"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "rc.local must be executable");
    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        lab.read("etc/rc.local").is_none(),
        "the rc.local it made goes"
    );
    lab.cleanup();
}

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

#[test]
fn tarball_with_a_flipped_byte_is_refused() {
    let lab = Lab::new("flipped");
    lab.publish(&[standard_module()]);
    let tarball = lab.dist.join(format!("{DIST_NAME}.tar.gz"));
    let mut bytes = std::fs::read(&tarball).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tarball, bytes).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(
        &lab,
        &out,
        &before,
        "checksum mismatch for Debian-12-x86_64.tar.gz",
    );
    lab.cleanup();
}

#[test]
fn module_for_another_kernel_is_refused_on_vermagic() {
    let lab = Lab::new("vermagic");
    lab.publish(&[KernelModule::new(
        KREL,
        "6.1.999-1",
        fake_ko("6.1.0-98-amd64", "SRC1"),
    )]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(
        &lab,
        &out,
        &before,
        &format!("built for kernel 6.1.0-98-amd64, but this machine runs {KREL}"),
    );
    lab.cleanup();
}

#[test]
fn lockdown_is_detected_before_loading() {
    let lab = Lab::new("lockdown");
    lab.publish(&[standard_module()]);
    lab.write(
        "sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    );
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(&lab, &out, &before, "loads only signed modules");
    assert!(out.stderr.contains("mokutil --import"), "{}", out.text());
    assert!(out.stderr.contains("Secure Boot off"), "{}", out.text());

    std::fs::remove_file(lab.root.join("sys/kernel/security/lockdown")).unwrap();
    lab.stub("mokutil", "echo 'SecureBoot enabled'");
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(&lab, &out, &before, "Secure Boot is enabled");
    lab.cleanup();
}

#[test]
fn truncated_script_does_nothing() {
    let lab = Lab::new("truncated");
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    for name in ["install_toa.sh", "compile_install_toa.sh"] {
        let script = lab.script(name);
        // A cut inside the last line (`main "$@" || exit 1`) leaves a whole
        // script; every cut before it must leave only definitions.
        let last_line = script[..script.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        let mut cuts: Vec<usize> = (1..64).map(|i| last_line * i / 64).collect();
        cuts.push(script.len() / 2);
        cuts.push(last_line);
        for cut in cuts {
            let out = lab.pipe(&script[..cut], &[]);
            assert!(
                out.calls.is_empty(),
                "{name} cut at {cut} ran commands\n{}",
                out.text()
            );
            assert_eq!(
                snapshot(&lab.root),
                before,
                "{name} cut at {cut} changed files"
            );
            assert!(
                !out.stdout.contains("toa:"),
                "{name} cut at {cut}: {}",
                out.text()
            );
        }
    }
    lab.cleanup();
}

#[test]
fn dry_run_changes_nothing() {
    let lab = Lab::new("dryrun");
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run(
        "install_toa.sh",
        &["--dry-run", "--trusted-proxies", "10.0.0.0/8"],
    );
    assert!(out.ok, "{}", out.text());
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(snapshot(&lab.root), before);
    for action in [
        "would run: modprobe toa",
        "would run: depmod -a 6.1.0-99-amd64",
        "would install toa.ko as",
        "would write",
        "modules-load.d/toa.conf",
        "modprobe.d/toa.conf",
        "nothing was changed",
    ] {
        assert!(
            out.stdout.contains(action),
            "{action:?} missing\n{}",
            out.text()
        );
    }

    // And on an installed machine, --dry-run --uninstall only says what it would remove.
    assert!(lab.run("install_toa.sh", &[]).ok);
    let installed = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--dry-run", "--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(snapshot(&lab.root), installed);
    assert!(
        out.stdout.contains("would run: rmmod toa"),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn no_prebuilt_module_names_the_kernel_and_the_compile_command() {
    let lab = Lab::new("noprebuilt");
    lab.publish(&[KernelModule::new(
        "6.1.0-98-amd64",
        "6.1.998-1",
        fake_ko("6.1.0-98-amd64", "SRC0"),
    )]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("there is no prebuilt toa.ko for kernel {KREL}")),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("6.1.0-98-amd64"),
        "lists the kernels there are"
    );
    assert!(
        out.stderr.contains(&format!(
            "curl -fsSL {}/compile_install_toa.sh | sudo bash -s -- --base-url {}",
            lab.base_url, lab.base_url
        )),
        "{}",
        out.text()
    );
    assert!(out.mutating().is_empty());
    assert_eq!(snapshot(&lab.root), before);
    lab.cleanup();
}

#[test]
fn compile_option_builds_when_there_is_no_prebuilt_module() {
    let lab = Lab::new("compileopt");
    publish_source(&lab);
    lab.publish(&[KernelModule::new(
        "6.1.0-98-amd64",
        "6.1.998-1",
        fake_ko("6.1.0-98-amd64", "SRC0"),
    )]);
    lab.write(&format!("lib/modules/{KREL}/build/Makefile"), "");
    let out = lab.run(
        "install_toa.sh",
        &["--compile", "--trusted-proxies", "10.0.0.0/8"],
    );
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains("verified sha256 of compile_install_toa.sh"),
        "{}",
        out.text()
    );
    assert!(out.mutating().iter().any(|c| c.starts_with("make -C ")));
    assert!(
        out.mutating().ends_with(&["modprobe toa".to_string()]),
        "{}",
        out.text()
    );
    assert!(lab
        .read("etc/modprobe.d/toa.conf")
        .unwrap()
        .contains("trusted_proxies=10.0.0.0/8"));

    // A compile script that does not match SHA256SUMS is not run.
    assert!(lab.run("install_toa.sh", &["--uninstall"]).ok);
    let path = lab.dist.join("compile_install_toa.sh");
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"# altered\n");
    std::fs::write(&path, text).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--compile"]);
    assert_refused(
        &lab,
        &out,
        &before,
        "checksum mismatch for compile_install_toa.sh",
    );
    lab.cleanup();
}

#[test]
fn entry_is_chosen_by_release_then_distro_and_uname_v() {
    let lab = Lab::new("choice");
    // Two tarballs carry a module for the same release; an old CentOS has no
    // os-release, only /etc/redhat-release.
    write_tarball(
        &lab.dist,
        "CentOS-7.2-x86_64",
        "centos-7.2",
        "x86_64",
        &[KernelModule::new(KREL, "1", fake_ko(KREL, "CENTOS"))],
    )
    .unwrap();
    lab.publish(&[standard_module()]);
    std::fs::remove_file(lab.root.join("etc/os-release")).unwrap();
    lab.write(
        "etc/redhat-release",
        "CentOS Linux release 7.2.1511 (Core)\n",
    );
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains("this machine: CentOS Linux release 7.2.1511 (Core), kernel"),
        "{}",
        out.text()
    );
    assert!(
        out.stdout
            .contains("(centos-7.2) in CentOS-7.2-x86_64.tar.gz"),
        "{}",
        out.text()
    );

    // Debian by its old release file: the Debian tarball's entry.
    std::fs::remove_file(lab.root.join("etc/redhat-release")).unwrap();
    lab.write("etc/debian_version", "12.8\n");
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains("(debian-12) in Debian-12-x86_64.tar.gz"),
        "{}",
        out.text()
    );

    // An entry that names a uname -v is only for that build of the kernel.
    let index = std::fs::read_to_string(lab.dist.join("index.json")).unwrap();
    std::fs::write(
        lab.dist.join("index.json"),
        index.replace("\"uname_v\":\"\"", "\"uname_v\":\"#2 SMP other build\""),
    )
    .unwrap();
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stdout.contains("there is no prebuilt toa.ko"),
        "{}",
        out.text()
    );
    std::fs::write(
        lab.dist.join("index.json"),
        index.replace(
            "\"uname_v\":\"\"",
            "\"uname_v\":\"#1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2025-01-01)\"",
        ),
    )
    .unwrap();
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(out.ok, "{}", out.text());
    lab.cleanup();
}

#[test]
fn missing_sha256sum_fails_closed() {
    let lab = Lab::new("nosha");
    lab.publish(&[standard_module()]);
    std::fs::remove_file(lab.bin.join("sha256sum")).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(out.stderr.contains("needs 'sha256sum'"), "{}", out.text());
    assert!(out.mutating().is_empty());
    assert_eq!(snapshot(&lab.root), before);
    lab.cleanup();
}

#[test]
fn newer_module_replaces_the_loaded_one() {
    let lab = Lab::new("upgrade");
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    lab.publish(&[KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC2"))]);
    let out = lab.run("install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}"), "modprobe toa"],
        "{}",
        out.text()
    );
    assert_eq!(
        lab.read("sys/module/toa/srcversion").unwrap().trim(),
        "SRC2"
    );
    lab.cleanup();
}

#[test]
fn refused_load_puts_the_previous_module_back_and_persists_nothing() {
    let mut lab = Lab::new("loadfail");
    lab.publish(&[standard_module()]);
    lab.env.push(("TOA_TEST_MODPROBE_FAIL".into(), "1".into()));
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(out.stderr.contains("modprobe toa failed"), "{}", out.text());
    assert!(out.stderr.contains("dmesg"), "{}", out.text());
    assert!(
        !lab.root.join(MODULE_PATH).exists(),
        "the refused module is removed"
    );
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}

#[test]
fn trusted_proxies_go_to_modprobe_d() {
    let lab = Lab::new("proxies");
    lab.publish(&[standard_module()]);
    let args = ["--trusted-proxies", "10.0.0.0/8,2001:db8::/32"];
    let out = lab.run("install_toa.sh", &args);
    assert!(out.ok, "{}", out.text());
    let conf = lab.read("etc/modprobe.d/toa.conf").unwrap();
    assert!(
        conf.lines()
            .any(|l| l == "options toa trusted_proxies=10.0.0.0/8,2001:db8::/32"),
        "{conf}"
    );
    assert!(
        out.stderr.contains("no trusted_proxies parameter yet"),
        "{}",
        out.text()
    );
    let installed = snapshot(&lab.root);
    let again = lab.run("install_toa.sh", &args);
    assert!(again.ok && again.mutating().is_empty(), "{}", again.text());
    assert_eq!(snapshot(&lab.root), installed);

    // A new list is written and the module reloaded to apply it.
    let out = lab.run("install_toa.sh", &["--trusted-proxies=192.0.2.0/24"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", "modprobe toa"],
        "{}",
        out.text()
    );

    let bad = lab.run(
        "install_toa.sh",
        &["--trusted-proxies", "10.0.0.0/8; rm -rf /"],
    );
    assert!(!bad.ok && bad.stderr.contains("comma-separated list of CIDRs"));

    assert!(lab.run("install_toa.sh", &["--uninstall"]).ok);
    assert!(lab.read("etc/modprobe.d/toa.conf").is_none());
    lab.cleanup();
}

#[test]
fn version_and_help() {
    let lab = Lab::new("version");
    let out = lab.run("install_toa.sh", &["--version"]);
    assert!(out.ok);
    assert_eq!(out.stdout, format!("install_toa.sh (toa) {VERSION}\n"));
    let out = lab.run("compile_install_toa.sh", &["--help"]);
    assert!(
        out.ok && out.stdout.contains("--trusted-proxies"),
        "{}",
        out.text()
    );
    let out = lab.run("install_toa.sh", &["--bogus"]);
    assert!(!out.ok && out.stderr.contains("unknown option '--bogus'"));
    assert!(out.calls.is_empty());
    lab.cleanup();
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

#[test]
fn compile_installs_headers_builds_and_loads() {
    let lab = Lab::new("compile");
    publish_source(&lab);
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    let calls = out.mutating();
    assert!(
        calls.contains(&format!(
            "apt-get install -y -q gcc make linux-headers-{KREL}"
        )),
        "{}",
        out.text()
    );
    assert!(
        calls.iter().any(|c| c.starts_with("make -C ")),
        "{}",
        out.text()
    );
    assert!(
        calls.ends_with(&[format!("depmod -a {KREL}"), "modprobe toa".to_string()]),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("verified sha256 of toa.tar.gz"));
    assert!(
        out.stdout.contains("dkms is not installed"),
        "{}",
        out.text()
    );
    assert_eq!(
        lab.read(MODULES_LOAD)
            .unwrap()
            .lines()
            .filter(|l| *l == "toa")
            .count(),
        1
    );

    // Headers present now: a second run builds again but changes nothing.
    let installed = snapshot(&lab.root);
    let again = lab.run("compile_install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    let changed: Vec<String> = again
        .mutating()
        .into_iter()
        .filter(|c| !c.starts_with("make -C "))
        .collect();
    assert!(changed.is_empty(), "{}", again.text());
    assert_eq!(snapshot(&lab.root), installed);

    // A damaged toa.tar.gz is refused.
    let tarball = lab.dist.join("toa.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    let end = bytes.len() - 3;
    bytes[end] ^= 0x80;
    std::fs::write(&tarball, bytes).unwrap();
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(
        !out.ok && out.stderr.contains("checksum mismatch for toa.tar.gz"),
        "{}",
        out.text()
    );
    assert!(out.mutating().is_empty(), "{}", out.text());
    lab.cleanup();
}

#[test]
fn compile_registers_with_dkms_and_uninstall_removes_it() {
    let lab = Lab::new("dkms");
    publish_source(&lab);
    lab.stub("dkms", DKMS_STUB);
    lab.write(&format!("lib/modules/{KREL}/build/Makefile"), "");
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    let calls = out.mutating();
    for want in [
        format!("dkms add -m toa -v {VERSION}"),
        format!("dkms build -m toa -v {VERSION} -k {KREL}"),
        format!("dkms install -m toa -v {VERSION} -k {KREL}"),
        "modprobe toa".to_string(),
    ] {
        assert!(calls.contains(&want), "{want} missing\n{}", out.text());
    }
    assert!(
        !calls.iter().any(|c| c.starts_with("apt-get")),
        "headers were there"
    );
    let conf = lab
        .read(&format!("usr/src/toa-{VERSION}/dkms.conf"))
        .unwrap();
    assert!(conf.contains(&format!("PACKAGE_VERSION=\"{VERSION}\"")));
    assert!(lab
        .root
        .join(format!(
            "usr/src/toa-{VERSION}/rust/toa_core-x86_64-plain.o"
        ))
        .is_file());
    assert!(lab
        .root
        .join(format!("lib/modules/{KREL}/updates/dkms/toa.ko"))
        .is_file());
    assert!(
        !lab.root.join(MODULE_PATH).exists(),
        "one toa.ko per kernel"
    );
    assert_eq!(
        lab.read("sys/module/toa/srcversion").unwrap().trim(),
        "DKMS"
    );

    let installed = snapshot(&lab.root);
    let again = lab.run("compile_install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    let changed: Vec<String> = again
        .mutating()
        .into_iter()
        .filter(|c| !c.starts_with("make -C "))
        .collect();
    assert!(changed.is_empty(), "{}", again.text());
    assert_eq!(snapshot(&lab.root), installed);

    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.mutating()
            .contains(&format!("dkms remove -m toa -v {VERSION} --all")),
        "{}",
        out.text()
    );
    assert!(!lab.root.join(format!("usr/src/toa-{VERSION}")).exists());
    assert!(!lab.root.join("sys/module/toa").exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
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

#[test]
fn install_runs_the_selftest_and_uninstall_removes_the_command() {
    let lab = Lab::new("selftest-pass");
    publish_toa_command(
        &lab,
        "PASS v4-toa-on-inet: ok\nselftest: 5 passed, 0 failed, 0 skipped",
        0,
    );
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.calls.contains(&"toa selftest".to_string()),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("verified sha256 of toa-x86_64"),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("selftest: 5 passed"), "{}", out.text());
    let installed = std::fs::read(lab.root.join(TOA_COMMAND)).unwrap();
    assert_eq!(
        installed,
        std::fs::read(lab.dist.join("toa-x86_64")).unwrap()
    );
    let again = lab.run("install_toa.sh", &[]);
    assert!(again.stdout.contains("is up to date"), "{}", again.text());

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert!(!lab.root.join(TOA_COMMAND).exists(), "{}", removed.text());
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        removed.text()
    );
    lab.cleanup();
}

#[test]
fn a_failed_selftest_rolls_the_installation_back() {
    let lab = Lab::new("selftest-fail");
    publish_toa_command(
        &lab,
        "PASS no-toa-v4: ok\nFAIL v4-toa-on-inet: expected [AF_INET 198.51.100.7:41001 len=16]",
        1,
    );
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr
            .contains("toa selftest failed: FAIL v4-toa-on-inet"),
        "{}",
        out.text()
    );
    assert!(
        out.mutating().contains(&"rmmod toa".to_string()),
        "{}",
        out.text()
    );
    assert!(!lab.root.join("sys/module/toa").exists(), "unloaded");
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn no_selftest_installs_the_command_without_running_it() {
    let lab = Lab::new("selftest-skip");
    publish_toa_command(&lab, "FAIL v4-toa-on-inet: would fail", 1);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--no-selftest"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        !out.calls.iter().any(|c| c.starts_with("toa ")),
        "{}",
        out.text()
    );
    assert!(lab.root.join(TOA_COMMAND).exists());
    lab.cleanup();
}

#[test]
fn a_damaged_command_download_rolls_back_too() {
    let lab = Lab::new("selftest-damaged");
    publish_toa_command(&lab, "selftest: 5 passed", 0);
    lab.publish(&[standard_module()]);
    std::fs::write(lab.dist.join("toa-x86_64"), "#!/bin/sh\nexit 0\n").unwrap();
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr.contains("checksum mismatch for toa-x86_64"),
        "{}",
        out.text()
    );
    assert!(!lab.root.join("sys/module/toa").exists(), "unloaded");
    assert!(!lab.root.join(MODULE_PATH).exists(), "{}", out.text());
    lab.cleanup();
}

#[test]
fn compile_install_runs_the_selftest_and_rolls_back_on_failure() {
    let lab = Lab::new("compile-selftest");
    publish_toa_command(
        &lab,
        "FAIL v6-toa-on-inet6: expected [AF_INET6 [2001:db8::7]:41002 len=28]",
        1,
    );
    publish_source(&lab);
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.calls.contains(&"toa selftest".to_string()),
        "{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("toa selftest failed: FAIL v6-toa-on-inet6"),
        "{}",
        out.text()
    );
    assert!(!lab.root.join("sys/module/toa").exists(), "unloaded");
    assert!(!lab.root.join(TOA_COMMAND).exists(), "{}", out.text());
    lab.cleanup();
}

/// The three Debian flavours of one ABI, each with its own module.
fn flavour_modules(flavours: &[&str]) -> Vec<KernelModule> {
    flavours
        .iter()
        .map(|f| {
            let release = format!("6.1.0-99-{f}");
            KernelModule::new(&release, "6.1.999-1", fake_ko(&release, f))
        })
        .collect()
}

#[test]
fn the_module_of_the_running_flavour_is_installed() {
    for flavour in ["cloud-amd64", "rt-amd64", "amd64"] {
        let mut lab = Lab::new(&format!("flavour-{flavour}"));
        lab.publish(&flavour_modules(&["amd64", "cloud-amd64", "rt-amd64"]));
        let krel = format!("6.1.0-99-{flavour}");
        lab.env.push(("TOA_TEST_KREL".into(), krel.clone()));
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{krel}/kernel"))).unwrap();
        let out = lab.run("install_toa.sh", &[]);
        assert!(out.ok, "{flavour}: {}", out.text());
        assert_eq!(
            std::fs::read(lab.root.join(format!("lib/modules/{krel}/updates/toa.ko"))).unwrap(),
            fake_ko(&krel, flavour),
            "{flavour}: the module of exactly this kernel"
        );
        lab.cleanup();
    }
}

#[test]
fn no_prebuilt_for_this_flavour_lists_the_distro_kernels_that_have_one() {
    let mut lab = Lab::new("flavour-missing");
    // Another release's kernels are not offered as this one's.
    write_tarball(
        &lab.dist,
        "Debian-11-x86_64",
        "debian-11",
        "x86_64",
        &[KernelModule::new(
            "5.10.0-99-rt-amd64",
            "5.10.999-1",
            fake_ko("5.10.0-99-rt-amd64", "B"),
        )],
    )
    .unwrap();
    lab.publish(&flavour_modules(&["amd64", "cloud-amd64"]));
    let krel = "6.1.0-99-rt-amd64";
    lab.env.push(("TOA_TEST_KREL".into(), krel.into()));
    std::fs::create_dir_all(lab.root.join(format!("lib/modules/{krel}/kernel"))).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("there is no prebuilt toa.ko for kernel {krel}")),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains(
            "prebuilt modules for debian-12 exist for kernels: 6.1.0-99-amd64, 6.1.0-99-cloud-amd64"
        ),
        "{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("compile_install_toa.sh | sudo bash -s -- --base-url"),
        "{}",
        out.text()
    );
    assert!(!out.stdout.contains("5.10.0-99"), "{}", out.text());
    assert!(out.mutating().is_empty());
    assert_eq!(snapshot(&lab.root), before);
    lab.cleanup();
}

/// An arm64 machine (`uname -m` says aarch64) takes the module of the
/// release's aarch64 tarball, even where the x86_64 tarball lists the same
/// kernel release string; an x86_64 machine takes the other one.
#[test]
fn the_module_of_the_machines_architecture_is_picked() {
    let krel = "6.1.0-99-arm64";
    for (arch, tarball) in [
        ("aarch64", "Debian-12-aarch64"),
        ("x86_64", "Debian-12-x86_64"),
    ] {
        let mut lab = Lab::new(&format!("arch-{arch}"));
        for (a, t) in [
            ("x86_64", "Debian-12-x86_64"),
            ("aarch64", "Debian-12-aarch64"),
        ] {
            let module = KernelModule::new(krel, "6.1.999-1", fake_ko(krel, a));
            write_tarball(&lab.dist, t, "debian-12", a, &[module]).unwrap();
        }
        index::write_index(&lab.dist).unwrap();
        lab.env.push(("TOA_TEST_KREL".into(), krel.into()));
        lab.env.push(("TOA_TEST_ARCH".into(), arch.into()));
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{krel}/kernel"))).unwrap();
        let before = snapshot(&lab.root);
        let out = lab.run("install_toa.sh", &["--dry-run"]);
        assert!(out.ok, "{arch}: {}", out.text());
        assert!(
            out.stdout.contains(&format!(
                "found toa.ko for {krel} (debian-12) in {tarball}.tar.gz"
            )),
            "{arch}: {}",
            out.text()
        );
        assert!(out.mutating().is_empty(), "{arch}: {}", out.text());
        assert_eq!(snapshot(&lab.root), before);

        let out = lab.run("install_toa.sh", &[]);
        assert!(out.ok, "{arch}: {}", out.text());
        assert_eq!(
            std::fs::read(lab.root.join(format!("lib/modules/{krel}/updates/toa.ko"))).unwrap(),
            fake_ko(krel, arch),
            "{arch}: the module of this architecture"
        );
        lab.cleanup();
    }
}
// ---------------------------------------------------------------- the eBPF mode

const BPF_UNIT_FILE: &str = "etc/systemd/system/toa-bpf.service";
const BPF_UNIT_LINK: &str = "etc/systemd/system/multi-user.target.wants/toa-bpf.service";
const BPF_ENV_FILE: &str = "etc/toa/bpf.env";
const BPF_PINS: &str = "sys/fs/bpf/toa";

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

#[test]
fn the_unit_is_compiled_into_install_toa_sh() {
    let text = render(SCRIPTS[0].1, "https://downloads.example.com/toa").unwrap();
    assert!(text.contains(BPF_UNIT), "the unit is inlined");
    assert!(!text.contains("@TOA_BPF_UNIT@"));
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "EnvironmentFile=/etc/toa/bpf.env",
        "ExecStart=/usr/local/sbin/toa bpf load",
        "ExecReload=/usr/local/sbin/toa bpf load",
        "Before=network-pre.target shutdown.target",
        "Wants=network-pre.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(BPF_UNIT.lines().any(|l| l == line), "unit lacks {line}");
    }
}

#[test]
fn bpf_mode_installs_unit_and_settings_reruns_change_nothing_uninstall_removes_all() {
    let lab = Lab::new("bpf");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);

    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "10.0.0.0/8"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        [
            "systemctl daemon-reload",
            "systemctl enable --quiet toa-bpf.service",
            "toa bpf load",
        ],
        "{}",
        out.text()
    );
    assert!(has_call(&out, "toa selftest"), "{}", out.text());
    assert!(out.stdout.contains("verified sha256 of toa-x86_64"));
    assert!(out.stdout.contains("selftest: 4 passed"), "{}", out.text());
    assert_eq!(lab.read(BPF_UNIT_FILE).unwrap(), BPF_UNIT);
    assert!(lab.root.join(BPF_UNIT_LINK).is_symlink());
    let env = lab.read(BPF_ENV_FILE).unwrap();
    assert!(
        env.lines().any(|l| l == "TOA_TRUSTED_PROXIES=10.0.0.0/8"),
        "{env}"
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/trusted_proxies")).unwrap(),
        "10.0.0.0/8\n",
        "the loader got the unit's settings"
    );
    assert!(
        !lab.root.join(MODULE_PATH).exists(),
        "no module in the eBPF mode"
    );
    assert!(lab.read(MODULES_LOAD).is_none());
    assert!(lab.root.join(TOA_COMMAND).is_file());

    // Again, and with --mode auto, which keeps the installed mode.
    let installed = snapshot(&lab.root);
    for args in [&["--mode", "bpf"][..], &[]] {
        let again = lab.run("install_toa.sh", args);
        assert!(again.ok, "{args:?}: {}", again.text());
        assert_eq!(again.mutating(), Vec::<String>::new(), "{}", again.text());
        assert!(
            again.stdout.contains("nothing to reload"),
            "{}",
            again.text()
        );
        assert!(has_call(&again, "toa selftest"), "{}", again.text());
        assert_eq!(snapshot(&lab.root), installed, "{args:?} changed files");
    }

    // New settings: written, and loaded again in place.
    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "192.0.2.0/24"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(out.mutating(), ["toa bpf load"], "{}", out.text());
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/trusted_proxies")).unwrap(),
        "192.0.2.0/24\n"
    );

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert_eq!(
        removed.mutating(),
        [
            "systemctl disable --now toa-bpf.service",
            "systemctl daemon-reload",
            "toa bpf unload",
        ],
        "{}",
        removed.text()
    );
    assert!(!lab.root.join(BPF_PINS).exists());
    assert!(!lab.root.join("etc/toa").exists(), "its directory goes too");
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        removed.text()
    );
    lab.cleanup();
}

/// The unit as install_toa.sh writes it: the text of its here-document.
fn rendered_unit() -> String {
    let script = render(SCRIPTS[0].1, "https://downloads.example.com/toa").unwrap();
    let start = script
        .find("<<'TOA_UNIT'\n")
        .expect("the unit's here-document")
        + 13;
    let end = start + script[start..].find("\nTOA_UNIT\n").expect("its end");
    script[start..=end].to_string()
}

/// `systemctl reload toa-bpf` after an edit of bpf.env loads again (settings
/// and cgroup updated in place, open connections keep their client), never
/// unloads; a load refused at boot fails the unit with toa's message in the
/// journal (and on the console), and nothing skips the unit silently.
#[test]
fn the_unit_reloads_in_place_and_a_refused_load_fails_it_loudly() {
    let unit = rendered_unit();
    assert_eq!(unit, BPF_UNIT);
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(String::from)
            .collect()
    };
    assert_eq!(values("ExecStart"), ["/usr/local/sbin/toa bpf load"]);
    assert_eq!(
        values("ExecReload"),
        values("ExecStart"),
        "a reload is a load again, in place"
    );
    assert_eq!(values("ExecStop"), ["/usr/local/sbin/toa bpf unload"]);
    assert_eq!(values("Type"), ["oneshot"], "a failed load fails the unit");
    assert!(
        unit.lines().all(|l| !l.starts_with("Condition")),
        "a condition skips the unit without an error"
    );
    assert_eq!(values("AssertFileIsExecutable"), ["/usr/local/sbin/toa"]);
    for exec in ["ExecStart", "ExecReload"] {
        for v in values(exec) {
            assert!(
                !v.starts_with(['-', '+', ':', '!']),
                "{exec}={v}: a prefix would ignore a failure or change how it runs"
            );
        }
    }
    let stderr = values("StandardError");
    assert!(
        stderr.len() == 1 && stderr[0].split('+').any(|t| t == "journal"),
        "toa's reason must reach the journal: {stderr:?}"
    );
    assert!(stderr[0].contains("console"), "{stderr:?}");
    assert!(
        unit.contains("TOA_CGROUP"),
        "the unit says which settings bpf.env holds"
    );
    // systemd's own parser, where it is installed: every key is one it knows
    // (a misspelt one is ignored with a warning, silently dropping a rule).
    if let Some(analyze) = which("systemd-analyze") {
        let dir = crate::testing::scratch("unit");
        let path = dir.join("toa-bpf.service");
        std::fs::write(&path, &unit).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        // The toa command is not installed here: that one complaint is expected.
        let other: Vec<&str> = said
            .lines()
            .filter(|l| !l.contains("/usr/local/sbin/toa is not executable"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(other.is_empty(), "systemd-analyze verify: {said}");
    }
}

/// The eBPF mode's settings lines of bpf.env, in order.
fn bpf_env_settings(lab: &Lab) -> Vec<String> {
    lab.read(BPF_ENV_FILE)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("TOA_"))
        .map(String::from)
        .collect()
}

#[test]
fn bpf_mode_reruns_keep_ports_formats_and_capture_unless_told_otherwise() {
    let lab = Lab::new("bpf-keep");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);

    let out = lab.run(
        "install_toa.sh",
        &[
            "--mode",
            "bpf",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--ports",
            "80,8000-8099",
            "--formats",
            "0x3",
            "--capture",
            "sock-ops",
        ],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=10.0.0.0/8",
            "TOA_PORTS=80,8000-8099",
            "TOA_FORMATS=0x3",
            "TOA_CAPTURE=sock-ops",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/settings")).unwrap(),
        "ports=80,8000-8099 formats=0x3 capture=sock-ops\n",
        "the loader got every setting"
    );

    // New trusted proxies only: the rest stays as the first install set it.
    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "192.0.2.0/24"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(out.mutating(), ["toa bpf load"], "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=192.0.2.0/24",
            "TOA_PORTS=80,8000-8099",
            "TOA_FORMATS=0x3",
            "TOA_CAPTURE=sock-ops",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/settings")).unwrap(),
        "ports=80,8000-8099 formats=0x3 capture=sock-ops\n"
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/trusted_proxies")).unwrap(),
        "192.0.2.0/24\n"
    );

    // Told otherwise: --ports '' is every port again; --mode auto keeps the mode.
    let out = lab.run("install_toa.sh", &["--ports", "", "--formats", "9"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=192.0.2.0/24",
            "TOA_FORMATS=9",
            "TOA_CAPTURE=sock-ops",
        ]
    );

    // A dry run shows the settings it would load and changes nothing.
    let installed = snapshot(&lab.root);
    let dry = lab.run("install_toa.sh", &["--dry-run", "--capture", "fexit"]);
    assert!(dry.ok, "{}", dry.text());
    assert!(
        dry.stdout.contains(
            "would run: env TOA_TRUSTED_PROXIES=192.0.2.0/24 TOA_FORMATS=9 TOA_CAPTURE=fexit"
        ),
        "{}",
        dry.text()
    );
    assert_eq!(snapshot(&lab.root), installed);
    lab.cleanup();
}

/// Links detached by other means (the pins stay): a rerun that changes
/// nothing must not take the pins for proof and skip the load (the
/// self-test would then fail and roll the installation back): it loads again.
#[test]
fn a_rerun_loads_again_when_the_pinned_programs_do_not_run() {
    let lab = Lab::new("bpf-detached");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert!(out.ok, "{}", out.text());
    std::fs::remove_file(lab.root.join(BPF_PINS).join("attached")).unwrap();

    let again = lab.run("install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    assert_eq!(again.mutating(), ["toa bpf load"], "{}", again.text());
    assert!(
        again
            .stdout
            .contains("toa status reports a problem: loading it again"),
        "{}",
        again.text()
    );
    assert!(lab.root.join(BPF_PINS).join("attached").is_file());
    assert!(lab.root.join(BPF_UNIT_LINK).is_symlink(), "still installed");
    lab.cleanup();
}

/// A bpf.env an operator (or an earlier install) wrote with every setting:
/// an install that changes only the trusted proxies keeps the others.
#[test]
fn new_trusted_proxies_keep_the_other_settings_of_an_earlier_bpf_env() {
    let lab = Lab::new("bpf-earlier");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert!(out.ok, "{}", out.text());
    lab.write(
        BPF_ENV_FILE,
        "# edited by hand\nTOA_TRUSTED_PROXIES=10.0.0.0/8\nTOA_PORTS=443\nTOA_FORMATS=0x1\n\
         TOA_CAPTURE=sock-ops\n",
    );
    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "192.0.2.0/24"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=192.0.2.0/24",
            "TOA_PORTS=443",
            "TOA_FORMATS=0x1",
            "TOA_CAPTURE=sock-ops",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/settings")).unwrap(),
        "ports=443 formats=0x1 capture=sock-ops\n",
        "the loader got them"
    );
    lab.cleanup();
}

#[test]
fn bpf_settings_are_checked_and_refused_for_toa_ko_before_any_change() {
    let lab = Lab::new("bpf-flags");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    for (args, says) in [
        (
            &["--mode", "bpf", "--ports", "80;reboot"][..],
            "--ports takes",
        ),
        (
            &["--mode", "bpf", "--formats", "0xg"][..],
            "--formats takes",
        ),
        (&["--mode", "bpf", "--formats", ""][..], "--formats takes"),
        (
            &["--mode", "bpf", "--capture", "kprobe"][..],
            "--capture takes auto, fexit or sock-ops",
        ),
        (&["--mode", "bpf", "--capture"][..], "--capture needs"),
        (
            &["--mode", "kmod", "--ports", "80"][..],
            "--ports: settings of the eBPF mode",
        ),
        // auto picks toa.ko here (a prebuilt module matches): refused before it loads.
        (
            &["--capture", "fexit", "--formats", "3"][..],
            "--formats --capture: settings of the eBPF mode",
        ),
    ] {
        let out = lab.run("install_toa.sh", args);
        assert!(!out.ok, "{args:?}: {}", out.text());
        assert!(out.stderr.contains(says), "{args:?}: {}", out.text());
        assert!(out.mutating().is_empty(), "{args:?}: {}", out.text());
        assert_eq!(snapshot(&lab.root), before, "{args:?}");
    }
    let out = lab.run("compile_install_toa.sh", &["--ports", "80"]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr.contains("--ports: settings of the eBPF mode"),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn one_mode_at_a_time() {
    let lab = Lab::new("bpf-switch");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);

    let kmod = lab.run("install_toa.sh", &["--trusted-proxies", "10.0.0.0/8"]);
    assert!(kmod.ok, "{}", kmod.text());
    assert!(lab.root.join("sys/module/toa").is_dir());

    let bpf = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert!(bpf.ok, "{}", bpf.text());
    assert!(
        bpf.stdout
            .contains("toa.ko is installed here; removing it first"),
        "{}",
        bpf.text()
    );
    let calls = bpf.mutating();
    let rmmod = calls.iter().position(|c| c == "rmmod toa");
    let load = calls.iter().position(|c| c == "toa bpf load");
    assert!(rmmod.is_some() && rmmod < load, "{}", bpf.text());
    assert!(!lab.root.join("sys/module/toa").exists());
    assert!(!lab.root.join(MODULE_PATH).exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    assert!(lab.read("etc/modprobe.d/toa.conf").is_none());
    assert!(lab.root.join(BPF_PINS).is_dir());

    let back = lab.run("install_toa.sh", &["--mode", "kmod"]);
    assert!(back.ok, "{}", back.text());
    assert!(
        back.stdout
            .contains("the eBPF mode is installed here; removing it first"),
        "{}",
        back.text()
    );
    assert!(!lab.root.join(BPF_PINS).exists());
    assert!(lab.read(BPF_UNIT_FILE).is_none());
    assert!(!lab.root.join(BPF_UNIT_LINK).exists());
    assert!(lab.read(BPF_ENV_FILE).is_none());
    assert!(lab.root.join("sys/module/toa").is_dir());

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert_eq!(files(&snapshot(&lab.root)), files(&before));
    lab.cleanup();
}

/// Which mode `--mode auto` installs, by the machine's state.
#[test]
fn auto_takes_the_module_when_it_can_load_else_the_ebpf_mode() {
    struct Case {
        name: &'static str,
        prebuilt: bool,
        krel: &'static str,
        files: &'static [(&'static str, &'static str)],
        env: &'static [(&'static str, &'static str)],
        /// "kmod", "bpf", or the refusal's text.
        expect: &'static str,
    }
    let cases = [
        Case {
            name: "prebuilt, loads",
            prebuilt: true,
            krel: KREL,
            files: &[],
            env: &[],
            expect: "kmod",
        },
        Case {
            name: "prebuilt, lockdown",
            prebuilt: true,
            krel: KREL,
            files: &[(
                "sys/kernel/security/lockdown",
                "none [integrity] confidentiality\n",
            )],
            env: &[],
            expect: "bpf",
        },
        Case {
            name: "prebuilt, Secure Boot",
            prebuilt: true,
            krel: KREL,
            files: &[],
            env: &[("TOA_TEST_SECURE_BOOT", "1")],
            expect: "bpf",
        },
        Case {
            name: "prebuilt, modules_disabled",
            prebuilt: true,
            krel: KREL,
            files: &[("proc/sys/kernel/modules_disabled", "1\n")],
            env: &[],
            expect: "bpf",
        },
        Case {
            name: "no prebuilt",
            prebuilt: false,
            krel: KREL,
            files: &[],
            env: &[],
            expect: "bpf",
        },
        Case {
            name: "no prebuilt, the kernel refuses the programs",
            prebuilt: false,
            krel: KREL,
            files: &[],
            env: &[("TOA_TEST_BPF_REFUSE", "1")],
            expect: "no prebuilt toa.ko for kernel 6.1.0-99-amd64",
        },
        Case {
            name: "no prebuilt, kernel 5.4",
            prebuilt: false,
            krel: "5.4.0-99-generic",
            files: &[],
            env: &[],
            expect: "no prebuilt toa.ko for kernel 5.4.0-99-generic",
        },
        Case {
            name: "prebuilt, lockdown, the kernel refuses the programs",
            prebuilt: true,
            krel: KREL,
            files: &[("sys/kernel/security/lockdown", "[integrity]\n")],
            env: &[("TOA_TEST_BPF_REFUSE", "1")],
            expect: "loads only signed modules",
        },
    ];
    for case in cases {
        let mut lab = Lab::new("auto");
        publish_bpf_toa_command(&lab);
        let module = KernelModule::new(case.krel, "1.0-1", fake_ko(case.krel, "SRC1"));
        let other = KernelModule::new("6.1.0-98-amd64", "1.0-1", fake_ko("6.1.0-98-amd64", "S"));
        lab.publish(&[if case.prebuilt { module } else { other }]);
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{}", case.krel))).unwrap();
        for (path, text) in case.files {
            lab.write(path, text);
        }
        lab.env.push(("TOA_TEST_KREL".into(), case.krel.into()));
        for (k, v) in case.env {
            lab.env.push((k.to_string(), v.to_string()));
        }
        let before = snapshot(&lab.root);
        let out = lab.run("install_toa.sh", &[]);
        let name = case.name;
        match case.expect {
            "kmod" => {
                assert!(out.ok, "{name}: {}", out.text());
                assert!(has_call(&out, "modprobe toa"), "{name}: {}", out.text());
                assert!(!has_call(&out, "toa bpf load"), "{name}: {}", out.text());
            }
            "bpf" => {
                assert!(out.ok, "{name}: {}", out.text());
                assert!(has_call(&out, "toa bpf load"), "{name}: {}", out.text());
                assert!(!has_call(&out, "modprobe toa"), "{name}: {}", out.text());
                assert!(lab.root.join(BPF_PINS).is_dir(), "{name}");
            }
            refusal => {
                assert!(!out.ok, "{name}: {}", out.text());
                assert!(out.stderr.contains(refusal), "{name}: {}", out.text());
                assert!(!has_call(&out, "modprobe toa"), "{name}: {}", out.text());
                assert_eq!(
                    files(&snapshot(&lab.root)),
                    files(&before),
                    "{name}: {}",
                    out.text()
                );
            }
        }
        lab.cleanup();
    }
}

#[test]
fn bpf_mode_is_rolled_back_when_the_kernel_refuses_or_the_selftest_fails() {
    for (env, message) in [
        (
            "TOA_TEST_BPF_REFUSE",
            "toa bpf load failed: toa: error: the kernel refused the sock_ops program",
        ),
        (
            "TOA_TEST_SELFTEST_FAIL",
            "toa selftest failed: FAIL v4-toa-on-inet",
        ),
    ] {
        let mut lab = Lab::new("bpf-rollback");
        publish_bpf_toa_command(&lab);
        lab.publish(&[standard_module()]);
        lab.env.push((env.into(), "1".into()));
        let before = snapshot(&lab.root);
        let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
        assert!(!out.ok, "{env}: {}", out.text());
        assert!(out.stderr.contains(message), "{env}: {}", out.text());
        assert!(!lab.root.join(BPF_PINS).exists(), "{env}");
        assert_eq!(
            files(&snapshot(&lab.root)),
            files(&before),
            "{env}: {}",
            out.text()
        );
        lab.cleanup();
    }
}

#[test]
fn bpf_mode_refuses_an_old_kernel_and_a_machine_without_systemd() {
    let mut lab = Lab::new("bpf-refused");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    lab.env
        .push(("TOA_TEST_KREL".into(), "4.19.0-27-amd64".into()));
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert_refused(
        &lab,
        &out,
        &before,
        "the eBPF mode needs kernel 5.10 or newer, and this machine runs 4.19.0-27-amd64",
    );
    lab.env.clear();
    std::fs::remove_dir_all(lab.root.join("run/systemd")).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert_refused(&lab, &out, &before, "the eBPF mode needs systemd");
    lab.cleanup();
}

#[test]
fn bpf_dry_run_changes_nothing() {
    let lab = Lab::new("bpf-dry");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run(
        "install_toa.sh",
        &[
            "--mode",
            "bpf",
            "--dry-run",
            "--trusted-proxies",
            "10.0.0.0/8",
        ],
    );
    assert!(out.ok, "{}", out.text());
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(snapshot(&lab.root), before);
    for text in [
        "would write",
        "/etc/systemd/system/toa-bpf.service",
        "would run: systemctl enable --quiet toa-bpf.service",
        "would run: env TOA_TRUSTED_PROXIES=10.0.0.0/8 /usr/local/sbin/toa bpf load",
    ] {
        assert!(out.stdout.contains(text), "{text}: {}", out.text());
    }
    lab.cleanup();
}

#[test]
fn mode_arguments_are_checked() {
    let lab = Lab::new("mode-args");
    for (script, args, message) in [
        (
            "install_toa.sh",
            &["--mode", "ebpf"][..],
            "--mode takes auto, kmod or bpf, not 'ebpf'",
        ),
        (
            "install_toa.sh",
            &["--mode"][..],
            "--mode needs one of auto, kmod, bpf",
        ),
        (
            "install_toa.sh",
            &["--mode=bpf", "--uninstall"][..],
            "it takes no --mode",
        ),
        (
            "install_toa.sh",
            &["--mode", "bpf", "--compile"][..],
            "--compile builds toa.ko",
        ),
        (
            "compile_install_toa.sh",
            &["--mode", "bpf"][..],
            "install_toa.sh | sudo bash -s -- --mode bpf",
        ),
    ] {
        let out = lab.run(script, args);
        assert!(!out.ok, "{script} {args:?}: {}", out.text());
        assert!(
            out.stderr.contains(message),
            "{script} {args:?}: {}",
            out.text()
        );
        assert!(out.mutating().is_empty(), "{}", out.text());
    }
    lab.cleanup();
}

/// /proc/net/toa_stats once toa.ko pinned itself (a socket took kTLS): the
/// rmmod stub then refuses, as the kernel does.
const PINNED_STATS: &str = "                          CPU0
syn_recv_sock_toa        : 0
listen_probe_missed      : 0
kretprobe_missed         : 0
listen_armed_at_load     : 0
pinned                   : 1
records_live             : 0
";

fn pin(lab: &Lab) {
    assert!(lab.root.join("sys/module/toa").is_dir(), "toa.ko is loaded");
    lab.write("proc/net/toa_stats", PINNED_STATS);
}

const PINNED_UNINSTALLED: &str =
    "toa.ko stays loaded until the next reboot: it is pinned (a socket \
     took kTLS or another TCP ULP); nothing loads it at boot any more";

/// The files of `before` plus what a loaded toa.ko puts under /sys and /proc.
fn with_loaded_module(before: &Tree) -> Vec<PathBuf> {
    let mut want: Vec<PathBuf> = files(before).into_iter().cloned().collect();
    want.push(PathBuf::from("proc/net/toa_stats"));
    want.push(PathBuf::from("proc/net/toa_listeners"));
    want.push(PathBuf::from("sys/module/toa/srcversion"));
    want.sort();
    want
}

fn file_list(tree: &Tree) -> Vec<PathBuf> {
    files(tree).into_iter().cloned().collect()
}

#[test]
fn uninstall_with_a_pinned_module_removes_everything_else_and_succeeds() {
    let lab = Lab::new("pinned-uninstall");
    publish_toa_command(&lab, "selftest: 5 passed, 0 failed, 0 skipped", 0);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--trusted-proxies", "10.0.0.0/8"]);
    assert!(out.ok, "{}", out.text());
    pin(&lab);

    // --dry-run says what would happen and changes nothing.
    let installed = snapshot(&lab.root);
    let dry = lab.run("install_toa.sh", &["--dry-run", "--uninstall"]);
    assert!(dry.ok, "{}", dry.text());
    assert!(dry.mutating().is_empty(), "{}", dry.text());
    assert_eq!(snapshot(&lab.root), installed, "{}", dry.text());
    assert!(
        dry.stdout.contains("rmmod toa would be refused"),
        "{}",
        dry.text()
    );

    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}")],
        "{}",
        out.text()
    );
    assert!(out.stdout.contains(PINNED_UNINSTALLED), "{}", out.text());
    assert!(!out.stderr.contains("error"), "{}", out.text());
    assert!(lab.root.join("sys/module/toa").is_dir(), "still loaded");
    for gone in [
        MODULE_PATH,
        MODULES_LOAD,
        "etc/modprobe.d/toa.conf",
        TOA_COMMAND,
    ] {
        assert!(!lab.root.join(gone).exists(), "{gone}: {}", out.text());
    }
    assert_eq!(
        file_list(&snapshot(&lab.root)),
        with_loaded_module(&before),
        "{}",
        out.text()
    );

    // Again (before the reboot): still refused, nothing else to do, no error.
    let again = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(again.ok, "{}", again.text());
    assert_eq!(again.mutating(), ["rmmod toa"], "{}", again.text());
    assert!(
        again.stdout.contains(PINNED_UNINSTALLED),
        "{}",
        again.text()
    );
    lab.cleanup();
}

#[test]
fn upgrade_with_a_pinned_module_installs_for_the_next_boot() {
    let lab = Lab::new("pinned-upgrade");
    publish_toa_command(
        &lab,
        "PASS v4-toa-on-inet: ok\nselftest: 5 passed, 0 failed, 0 skipped",
        0,
    );
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    pin(&lab);
    lab.write("sys/module/toa/parameters/trusted_proxies", "\n");
    lab.publish(&[KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC2"))]);

    let out = lab.run("install_toa.sh", &["--trusted-proxies", "10.0.0.0/8"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}")],
        "no modprobe: the old toa.ko is loaded\n{}",
        out.text()
    );
    assert!(has_call(&out, "toa selftest"), "{}", out.text());
    assert!(out.stdout.contains("selftest: 5 passed"), "{}", out.text());
    assert!(
        out.stdout
            .contains("the new toa.ko takes over at the next reboot"),
        "{}",
        out.text()
    );
    assert!(!out.stderr.contains("error"), "{}", out.text());
    assert_eq!(
        std::fs::read(lab.root.join(MODULE_PATH)).unwrap(),
        fake_ko(KREL, "SRC2"),
        "the next boot loads the new module"
    );
    assert_eq!(
        lab.read("sys/module/toa/srcversion").unwrap().trim(),
        "SRC1",
        "the old one still runs"
    );
    assert!(lab.read(MODULES_LOAD).is_some());
    assert!(lab
        .read("etc/modprobe.d/toa.conf")
        .unwrap()
        .contains("options toa trusted_proxies=10.0.0.0/8"));
    assert_eq!(
        lab.read("sys/module/toa/parameters/trusted_proxies")
            .unwrap(),
        "10.0.0.0/8",
        "the running module takes the new trust list now"
    );

    // Run again before the reboot: nothing new to place, the same answer.
    let installed = snapshot(&lab.root);
    let again = lab.run("install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    assert_eq!(again.mutating(), ["rmmod toa"], "{}", again.text());
    assert!(
        again
            .stdout
            .contains("the new toa.ko takes over at the next reboot"),
        "{}",
        again.text()
    );
    assert_eq!(
        file_list(&snapshot(&lab.root)),
        file_list(&installed),
        "{}",
        again.text()
    );
    lab.cleanup();
}

#[test]
fn rollback_with_a_pinned_module_fails_closed() {
    // A fresh install whose module is pinned (a service took kTLS) by the
    // time its self-test fails.
    let lab = Lab::new("pinned-rollback");
    let body = format!(
        "#!{}\n{STUB_LOG}\nprintf '%s' '{PINNED_STATS}' >\"$TOA_ROOT/proc/net/toa_stats\"\n\
         echo 'FAIL v4-toa-on-inet: expected [AF_INET 198.51.100.7:41001 len=16]'\nexit 1\n",
        bash().display()
    );
    std::fs::write(lab.dist.join("toa-x86_64"), body).unwrap();
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "fails closed: {}", out.text());
    for said in [
        "toa selftest failed: FAIL v4-toa-on-inet",
        "toa.ko could not be unloaded: it is pinned (a socket took kTLS or another TCP ULP)",
        "it stays loaded until the next reboot, which does not load it again",
    ] {
        assert!(out.stderr.contains(said), "{said:?}\n{}", out.text());
    }
    assert!(
        out.mutating().contains(&"rmmod toa".to_string()),
        "{}",
        out.text()
    );
    assert!(lab.root.join("sys/module/toa").is_dir(), "still loaded");
    assert!(lab.read(MODULES_LOAD).is_none(), "not loaded at boot");
    assert!(!lab.root.join(MODULE_PATH).exists());
    assert!(!lab.root.join(TOA_COMMAND).exists());
    assert_eq!(
        file_list(&snapshot(&lab.root)),
        with_loaded_module(&before),
        "{}",
        out.text()
    );

    lab.cleanup();

    // An upgrade over a pinned module whose self-test fails: the new files
    // go again, the old module stays until the reboot.
    let lab = Lab::new("pinned-upgrade-rollback");
    publish_toa_command(&lab, "selftest: 5 passed, 0 failed, 0 skipped", 0);
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    pin(&lab);
    publish_toa_command(&lab, "FAIL v6-toa-on-inet6: expected [AF_INET6]", 1);
    lab.publish(&[KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC2"))]);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        [
            "rmmod toa",
            &format!("depmod -a {KREL}"),
            &format!("depmod -a {KREL}"),
        ],
        "rmmod is tried once\n{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("toa.ko could not be unloaded: it is pinned"),
        "{}",
        out.text()
    );
    assert!(lab.root.join("sys/module/toa").is_dir());
    assert!(!lab.root.join(MODULE_PATH).exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}

#[test]
fn the_ebpf_mode_is_refused_while_a_pinned_module_is_loaded() {
    let lab = Lab::new("pinned-bpf");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--mode", "kmod"]);
    assert!(out.ok, "{}", out.text());
    pin(&lab);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert_refused(
        &lab,
        &out,
        &before,
        "the eBPF mode cannot be installed now: toa.ko is loaded and cannot be unloaded before \
         the next reboot, it is pinned (a socket took kTLS or another TCP ULP)",
    );
    assert!(
        out.stderr
            .contains("reboot, then run this again with --mode bpf"),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn rmmod_refused_for_another_reason_is_still_an_error() {
    let mut lab = Lab::new("rmmod-busy");
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    lab.env.push(("TOA_TEST_RMMOD_BUSY".into(), "1".into()));
    let installed = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(!out.ok, "{}", out.text());
    for said in [
        "Module toa is in use",
        "could not unload the toa module that is loaded now (rmmod toa failed)",
        "lsmod | grep toa",
    ] {
        assert!(out.stderr.contains(said), "{said:?}\n{}", out.text());
    }
    assert!(!out.stdout.contains("pinned"), "{}", out.text());
    assert_eq!(snapshot(&lab.root), installed, "{}", out.text());
    lab.cleanup();
}

#[test]
fn uninstall_with_a_pinned_module_built_by_dkms_removes_the_registration() {
    let lab = Lab::new("pinned-dkms");
    publish_source(&lab);
    lab.stub("dkms", DKMS_STUB);
    lab.write(&format!("lib/modules/{KREL}/build/Makefile"), "");
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    pin(&lab);
    let out = lab.run("compile_install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.mutating()
            .contains(&format!("dkms remove -m toa -v {VERSION} --all")),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains(PINNED_UNINSTALLED), "{}", out.text());
    assert!(lab.root.join("sys/module/toa").is_dir(), "still loaded");
    assert!(!lab.root.join(format!("usr/src/toa-{VERSION}")).exists());
    assert!(!lab
        .root
        .join(format!("lib/modules/{KREL}/updates/dkms/toa.ko"))
        .exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}

/// --cgroup: written to bpf.env as TOA_CGROUP, passed to `toa bpf load`,
/// kept by a rerun that does not give it, `/` for every process again;
/// refused with toa.ko and when it holds what the unit's environment file
/// would read differently.
#[test]
fn bpf_mode_cgroup_is_written_kept_and_checked() {
    let lab = Lab::new("bpf-cgroup");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    for (args, says) in [
        (
            &["--mode", "bpf", "--cgroup", "/system.slice/a b.service"][..],
            "--cgroup takes a cgroup v2 path",
        ),
        (
            &["--mode", "bpf", "--cgroup", "/system.slice/../x"][..],
            "no '..'",
        ),
        (&["--mode", "bpf", "--cgroup"][..], "--cgroup needs"),
        (
            &["--mode", "kmod", "--cgroup", "/system.slice"][..],
            "--cgroup: settings of the eBPF mode",
        ),
    ] {
        let out = lab.run("install_toa.sh", args);
        assert!(!out.ok, "{args:?}: {}", out.text());
        assert!(out.stderr.contains(says), "{args:?}: {}", out.text());
        assert!(out.mutating().is_empty(), "{args:?}: {}", out.text());
        assert_eq!(snapshot(&lab.root), before, "{args:?}");
    }

    let out = lab.run(
        "install_toa.sh",
        &[
            "--mode",
            "bpf",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--cgroup",
            "/system.slice/nginx.service",
        ],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=10.0.0.0/8",
            "TOA_CGROUP=/system.slice/nginx.service",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/cgroup")).unwrap(),
        "/system.slice/nginx.service\n",
        "the loader got it"
    );
    assert!(
        out.stderr
            .contains("/system.slice/nginx.service is a service's own cgroup"),
        "{}",
        out.text()
    );

    // Another setting only: the cgroup stays.
    let out = lab.run("install_toa.sh", &["--ports", "443"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=10.0.0.0/8",
            "TOA_PORTS=443",
            "TOA_CGROUP=/system.slice/nginx.service",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/cgroup")).unwrap(),
        "/system.slice/nginx.service\n"
    );

    // Told otherwise: every process, said explicitly (a load without it
    // would keep the cgroup the programs are attached to).
    for root in ["/", ""] {
        let out = lab.run("install_toa.sh", &["--cgroup", root]);
        assert!(out.ok, "{root:?}: {}", out.text());
        assert_eq!(
            bpf_env_settings(&lab),
            [
                "TOA_TRUSTED_PROXIES=10.0.0.0/8",
                "TOA_PORTS=443",
                "TOA_CGROUP=/",
            ],
            "{root:?}"
        );
        assert_eq!(lab.read(&format!("{BPF_PINS}/cgroup")).unwrap(), "/\n");
        assert!(!out.stderr.contains("own cgroup"), "{}", out.text());
    }
    lab.cleanup();
}
