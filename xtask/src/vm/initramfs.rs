//! The VM lab's initramfs: a gzip'd cpio "newc" archive, written in-process
//! (the format is small and this keeps the output reproducible: fixed
//! owners, times and inode numbers, entries sorted by path).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The guest's `/init`.
pub const GUEST_INIT: &str = include_str!("guest_init.sh");

/// Busybox applets linked into `/bin` (all exist in Debian's busybox-static
/// since bullseye). The lab program calls `ip`, `insmod` and `rmmod`.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "insmod", "rmmod", "lsmod", "modprobe", "ip", "ifconfig",
    "ping", "dmesg", "cat", "echo", "printf", "poweroff", "reboot", "mknod", "mkdir", "sleep",
    "uname", "sync", "ls", "ps", "kill", "grep", "sed", "awk", "head", "tail", "wc", "tr", "cut",
    "env", "true", "false", "test", "[", "sysctl", "timeout", "seq", "chmod", "ln", "rm", "cp",
    "mv", "date", "nproc", "free", "hexdump", "stat",
];

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An in-memory cpio archive. Paths are relative (`bin/sh`); parent
/// directories are added automatically.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    fn key(path: &str) -> String {
        path.trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    }

    fn add(&mut self, path: &str, node: Node) {
        let key = Archive::key(path);
        let mut from = 0;
        while let Some(pos) = key[from..].find('/') {
            let parent = key[..from + pos].to_string();
            self.entries
                .entry(parent)
                .or_insert(Node::Dir { mode: 0o755 });
            from += pos + 1;
        }
        self.entries.insert(key, node);
    }

    /// One line per entry that is not a directory, in archive order:
    /// `path (N bytes)`, `path -> target` or `path (char dev M:N)`.
    pub fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|(path, node)| match node {
                Node::Dir { .. } => None,
                Node::File { data, .. } => Some(format!("{path} ({} bytes)", data.len())),
                Node::Symlink { target } => Some(format!("{path} -> {target}")),
                Node::CharDev { major, minor, .. } => {
                    Some(format!("{path} (char dev {major}:{minor})"))
                }
            })
            .collect()
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.add(path, Node::Dir { mode });
        self
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> &mut Self {
        self.add(
            path,
            Node::File {
                mode,
                data: data.into(),
            },
        );
        self
    }

    /// Add the host file `from` as `path`.
    pub fn file_from(&mut self, path: &str, mode: u32, from: &Path) -> Result<&mut Self> {
        let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        Ok(self.file(path, mode, data))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.add(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        );
        self
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.add(path, Node::CharDev { mode, major, minor });
        self
    }

    /// Write the archive in cpio newc format.
    pub fn write_cpio(&self, mut out: impl Write) -> std::io::Result<()> {
        let mut written = 0usize;
        for (ino, (path, node)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir { mode } => (0o040000 | (mode & 0o7777), &[], (0, 0)),
                Node::File { mode, data } => (0o100000 | (mode & 0o7777), data, (0, 0)),
                Node::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Node::CharDev { mode, major, minor } => {
                    (0o020000 | (mode & 0o7777), &[], (*major, *minor))
                }
            };
            let nlink = if matches!(node, Node::Dir { .. }) {
                2
            } else {
                1
            };
            written += write_entry(&mut out, ino, mode, nlink, path, data, rdev)?;
        }
        written += write_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[], (0, 0))?;
        // Pad the archive to a 512-byte block as cpio(1) does.
        let pad = (512 - written % 512) % 512;
        out.write_all(&vec![0u8; pad])
    }

    /// Write the archive, gzip-compressed, to `path` (atomically).
    pub fn write_gz(&self, path: &Path) -> Result<()> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        self.write_cpio(&mut gz)?;
        let bytes = gz.finish()?;
        crate::host::fs::write_atomic(path, &bytes)
    }
}

fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) -> std::io::Result<usize> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        size = data.len(),
        maj = 0,
        min = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        check = 0,
    );
    debug_assert_eq!(header.len(), 110);
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let head = 110 + namesize;
    let head_pad = (4 - head % 4) % 4;
    out.write_all(&[0u8; 3][..head_pad])?;
    out.write_all(data)?;
    let data_pad = (4 - data.len() % 4) % 4;
    out.write_all(&[0u8; 3][..data_pad])?;
    Ok(head + head_pad + data.len() + data_pad)
}

/// What goes into the lab guest.
pub struct LabImage<'a> {
    /// Static busybox.
    pub busybox: &'a Path,
    /// Modules loaded before toa.ko, in order (tun and its dependencies).
    pub preload: &'a [PathBuf],
    /// The module under test; becomes `/lib/modules/toa.ko`.
    pub toa_ko: &'a Path,
    /// The static lab program; becomes `/bin/toa-lab`.
    pub lab_program: &'a Path,
    /// The operator's static `toa` command; becomes `/bin/toa`, which /init
    /// proves after the scenarios (status, stats, selftest with and without
    /// the module).
    pub operator_cli: Option<&'a Path>,
    /// The previous release's `toa`, as /bin/toa-previous (the eBPF mode's
    /// upgrade scenario).
    pub previous_operator_cli: Option<&'a Path>,
    /// Modules the lab loads and unloads itself, under `/lib/modules/`: the
    /// test-only in-kernel listener, the kernel's tls.ko (the ktls scenario
    /// wants kTLS tables built fresh, so it is not preloaded).
    pub test_modules: &'a [PathBuf],
    /// `/init`; [`GUEST_INIT`] unless a caller needs another.
    pub init: &'a str,
}

/// Puts `module` under `lib/modules/` by its file name, which it returns.
fn add_module<'p>(a: &mut Archive, module: &'p Path) -> Result<&'p str> {
    let name = module
        .file_name()
        .and_then(|n| n.to_str())
        .context("module path has no file name")?;
    a.file_from(&format!("lib/modules/{name}"), 0o644, module)?;
    Ok(name)
}

/// The lab archive: busybox and its applets, /init, modules, the lab program.
pub fn lab_archive(image: &LabImage) -> Result<Archive> {
    let mut a = Archive::new();
    for dir in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "root",
        "lib/modules",
    ] {
        a.dir(dir, 0o755);
    }
    // The kernel opens /dev/console for init's stdio before init mounts devtmpfs.
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);
    a.file_from("bin/busybox", 0o755, image.busybox)?;
    for applet in APPLETS {
        a.symlink(&format!("bin/{applet}"), "busybox");
    }
    a.symlink("sbin", "bin");
    a.file("init", 0o755, image.init);
    a.file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
    // Preloaded modules are listed in load order; test modules the lab loads itself.
    let mut preload = String::new();
    for module in image.preload {
        preload.push_str(add_module(&mut a, module)?);
        preload.push('\n');
    }
    a.file("lib/modules/preload", 0o644, preload);
    a.file_from("lib/modules/toa.ko", 0o644, image.toa_ko)?;
    for module in image.test_modules {
        add_module(&mut a, module)?;
    }
    a.file_from("bin/toa-lab", 0o755, image.lab_program)?;
    if let Some(toa) = image.operator_cli {
        a.file_from("bin/toa", 0o755, toa)?;
    }
    if let Some(toa) = image.previous_operator_cli {
        a.file_from("bin/toa-previous", 0o755, toa)?;
    }
    Ok(a)
}

/// Build the lab initramfs into `out` (`initramfs.cpio.gz`).
pub fn build_lab(image: &LabImage, out: &Path) -> Result<()> {
    lab_archive(image)?
        .write_gz(out)
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        duct::cmd!(tool, "--version")
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn newc_layout_is_aligned_and_padded() {
        let mut a = Archive::new();
        a.file("a", 0o644, "xyz");
        let mut out = Vec::new();
        a.write_cpio(&mut out).unwrap();
        assert_eq!(out.len() % 512, 0);
        assert!(out.starts_with(b"070701"));
        // Header (110) + "a\0" (2) = 112, aligned; data 3 + 1 pad.
        assert_eq!(&out[112..116], b"xyz\0");
        assert_eq!(&out[116..122], b"070701");
        let trailer = String::from_utf8_lossy(&out[116 + 110..116 + 120]).into_owned();
        assert_eq!(trailer, "TRAILER!!!");
    }

    #[test]
    fn parents_are_created_before_children() {
        let mut a = Archive::new();
        a.file("lib/modules/x.ko", 0o644, "x")
            .symlink("bin/sh", "busybox");
        let keys: Vec<&str> = a.entries.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["bin", "bin/sh", "lib", "lib/modules", "lib/modules/x.ko"]
        );
    }

    #[test]
    fn host_cpio_extracts_it() {
        if !have("cpio") {
            eprintln!("skipped: cpio is not installed (apt-get install cpio)");
            return;
        }
        let dir = crate::testing::scratch("cpio-extract");
        let mut a = Archive::new();
        a.file("init", 0o755, "#!/bin/sh\necho hi\n")
            .file("lib/modules/tun.ko", 0o644, vec![7u8; 1001])
            .symlink("bin/sh", "busybox")
            .file("bin/busybox", 0o755, "bb")
            .dir("proc", 0o555);
        let archive = dir.join("a.cpio");
        let mut bytes = Vec::new();
        a.write_cpio(&mut bytes).unwrap();
        std::fs::write(&archive, &bytes).unwrap();
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        duct::cmd!("cpio", "-idm", "--quiet", "--no-absolute-filenames")
            .dir(&root)
            .stdin_path(&archive)
            .run()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::read_to_string(root.join("init")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::metadata(root.join("init"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read(root.join("lib/modules/tun.ko")).unwrap(),
            vec![7u8; 1001]
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(root.join("proc").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_cpio_lists_device_nodes() {
        if !have("cpio") {
            eprintln!("skipped: cpio is not installed (apt-get install cpio)");
            return;
        }
        let dir = crate::testing::scratch("cpio-list");
        let mut a = Archive::new();
        a.char_dev("dev/console", 0o600, 5, 1);
        let archive = dir.join("a.cpio");
        let mut bytes = Vec::new();
        a.write_cpio(&mut bytes).unwrap();
        std::fs::write(&archive, &bytes).unwrap();
        let listing = duct::cmd!("cpio", "-itv", "--quiet")
            .stdin_path(&archive)
            .read()
            .unwrap();
        assert!(
            listing.lines().any(|l| l.starts_with("crw-------")
                && l.contains("5,")
                && l.ends_with("dev/console")),
            "{listing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lab_archive_has_everything_init_uses() {
        let dir = crate::testing::scratch("cpio-lab");
        let write = |name: &str, data: &str| {
            let p = dir.join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let busybox = write("busybox", "bb");
        let tun = write("tun.ko", "tun");
        let toa = write("toa.ko", "toa");
        let lab = write("toa-lab", "lab");
        let operator = write("toa", "toa");
        let tls = write("tls.ko", "tls");
        let preload = [tun];
        let on_demand = [tls];
        let image = LabImage {
            busybox: &busybox,
            preload: &preload,
            toa_ko: &toa,
            lab_program: &lab,
            operator_cli: Some(&operator),
            previous_operator_cli: None,
            test_modules: &on_demand,
            init: GUEST_INIT,
        };
        let a = lab_archive(&image).unwrap();
        for path in [
            "init",
            "bin/busybox",
            "bin/ip",
            "bin/insmod",
            "bin/rmmod",
            "bin/toa-lab",
            "bin/toa",
            "lib/modules/tun.ko",
            "lib/modules/toa.ko",
            "lib/modules/preload",
            "lib/modules/tls.ko",
            "dev/console",
        ] {
            assert!(a.entries.contains_key(path), "{path} missing");
        }
        // The lab loads tls.ko itself, fresh: /init must not.
        match &a.entries["lib/modules/preload"] {
            Node::File { data, .. } => assert_eq!(data, b"tun.ko\n"),
            other => panic!("preload is {other:?}"),
        }
        // Every command /init runs is an applet in the archive.
        for word in [
            "mount", "mkdir", "mknod", "ip", "insmod", "cat", "uname", "dmesg", "poweroff", "sync",
        ] {
            assert!(
                GUEST_INIT.contains(word) && APPLETS.contains(&word),
                "{word}"
            );
        }
        let out = dir.join("initramfs.cpio.gz");
        build_lab(&image, &out).unwrap();
        let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap());
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut gz, &mut raw).unwrap();
        assert!(raw.starts_with(b"070701"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
