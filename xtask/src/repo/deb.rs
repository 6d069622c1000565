//! Reading Debian packages without dpkg: the `.deb` ar archive, its
//! `data.tar.{xz,zst,gz}`, and the files the VM lab needs from kernel and
//! busybox packages (vmlinuz, modules with their dependencies, busybox).
//! Kernel packages of the RPM family go through the same walk (see
//! [`crate::repo::rpm_payload`]), so everything below takes either kind.
//!
//! Modules compressed as `.ko.xz`, `.ko.zst` or `.ko.gz` are decompressed on
//! the host so that busybox `insmod` (which takes a plain ELF) can load them.

use crate::repo::debian::{KernelPackages, PackageRef};
use crate::repo::decompress::{decompress, decompressor};
use crate::repo::entry::EntryKind;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// One member of an ar archive: its name and a reader over its bytes.
fn ar_member<R: Read>(
    mut reader: R,
    deb: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Result<(String, impl Read)> {
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .with_context(|| format!("{}: too short for a .deb", deb.display()))?;
    if &magic != b"!<arch>\n" {
        bail!("{}: not a .deb (no ar archive header)", deb.display());
    }
    loop {
        let mut header = [0u8; 60];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                bail!("{}: no data.tar member", deb.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", deb.display())),
        }
        if &header[58..60] != b"`\n" {
            bail!("{}: corrupt ar member header", deb.display());
        }
        let name = String::from_utf8_lossy(&header[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .with_context(|| format!("{}: bad ar member size", deb.display()))?;
        if wanted(&name) {
            return Ok((name, reader.take(size)));
        }
        // Skip the member and its padding to an even offset.
        let skip = size + (size & 1);
        let copied = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())?;
        if copied != skip {
            bail!("{}: truncated ar member {name}", deb.display());
        }
    }
}

/// Walk the file system tarball of `deb` (or the payload of an RPM),
/// calling `visit(path, kind, reader)` for each entry until it returns
/// `Ok(false)`. Paths are relative, without a leading `./` or `/`.
pub fn for_each_entry(
    deb: &Path,
    mut visit: impl FnMut(&str, EntryKind, &mut dyn Read) -> Result<bool>,
) -> Result<()> {
    if crate::repo::rpm_payload::is_rpm(deb) {
        return crate::repo::rpm_payload::for_each_entry(deb, visit);
    }
    for_each_entry_meta(deb, |path, kind, _meta, reader| visit(path, kind, reader))
}

/// What an unpacker needs of a tar entry besides its kind: the permission
/// bits (dpkg keeps them, and kbuild runs the packaged scripts), the
/// modification time (kbuild compares it with its objects'), and the
/// target of a hard link (relative to the archive root, like `path`).
pub struct EntryMeta {
    pub mode: u32,
    pub mtime: u64,
    pub hardlink: Option<String>,
}

/// [`for_each_entry`] with each entry's [`EntryMeta`].
pub fn for_each_entry_meta(
    deb: &Path,
    mut visit: impl FnMut(&str, EntryKind, EntryMeta, &mut dyn Read) -> Result<bool>,
) -> Result<()> {
    let file = File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    let (name, member) = ar_member(BufReader::with_capacity(1 << 20, file), deb, |n| {
        n.starts_with("data.tar")
    })?;
    let data = decompressor(&name, member).with_context(|| format!("{}: {name}", deb.display()))?;
    let mut archive = tar::Archive::new(data);
    let entries = archive
        .entries()
        .with_context(|| format!("reading {name} of {}", deb.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {name} of {}", deb.display()))?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let header = entry.header();
        let kind_type = header.entry_type();
        let meta = EntryMeta {
            mode: header.mode().unwrap_or(0o644),
            mtime: header.mtime().unwrap_or(0),
            hardlink: match kind_type {
                tar::EntryType::Link => entry.link_name()?.map(|l| {
                    l.to_string_lossy()
                        .trim_start_matches("./")
                        .trim_start_matches('/')
                        .to_string()
                }),
                _ => None,
            },
        };
        let kind = match kind_type {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink(
                entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => EntryKind::Other,
        };
        let more = visit(&path, kind, meta, &mut entry)
            .with_context(|| format!("{} in {}", path, deb.display()))?;
        if !more {
            break;
        }
    }
    Ok(())
}

/// Extract the first regular file of `deb` whose path is one of `candidates`.
/// Returns which candidate matched and its bytes.
pub fn read_one(deb: &Path, candidates: &[&str]) -> Result<(String, Vec<u8>)> {
    let mut found = None;
    let mut links = Vec::new();
    for_each_entry(deb, |path, kind, reader| {
        if !candidates.contains(&path) {
            return Ok(true);
        }
        match kind {
            EntryKind::File => {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes)?;
                found = Some((path.to_string(), bytes));
                return Ok(false);
            }
            EntryKind::Symlink(target) => links.push(format!("{path} -> {target}")),
            _ => {}
        }
        Ok(true)
    })?;
    found.with_context(|| {
        let mut msg = format!(
            "{} contains none of: {}",
            deb.display(),
            candidates.join(", ")
        );
        if !links.is_empty() {
            msg.push_str(&format!(" (only symlinks: {})", links.join(", ")));
        }
        msg
    })
}

/// `.modinfo` of a module: `key=value` pairs in order (`depends`, `vermagic`, ...).
pub fn modinfo(ko: &[u8]) -> Result<Vec<(String, String)>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(ko).context("not an ELF object")?;
    let Some(section) = file.section_by_name(".modinfo") else {
        bail!("no .modinfo section (not a kernel module?)");
    };
    let data = section.data().context("reading .modinfo")?;
    Ok(data
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

/// One `modinfo` value (the first), e.g. `vermagic`.
pub fn modinfo_value(ko: &[u8], key: &str) -> Result<Option<String>> {
    Ok(modinfo(ko)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

/// Kernel module names treat `-` and `_` alike.
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `.../kernel/drivers/net/tun.ko.xz`.
fn module_name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    Some(module_key(stem))
}

/// What the lab boots: the kernel and modules in load order.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// `uname -r`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Decompressed modules, dependencies before the modules that need them.
    pub modules: Vec<PathBuf>,
}

/// Extract vmlinuz and the modules `wanted` (with their dependencies) from
/// the kernel packages, into the cache. Built-in modules are skipped.
pub fn kernel_files(kernel: &KernelPackages, wanted: &[&str]) -> Result<KernelFiles> {
    let image = kernel.image.fetch()?;
    let modules_files = kernel
        .modules
        .iter()
        .map(PackageRef::fetch)
        .collect::<Result<Vec<_>>>()?;
    let dir = crate::host::cache::cache_dir()
        .join("kernels")
        .join(format!("{}_{}", kernel.release, kernel.version));
    let modules_sums: Vec<&str> = kernel.modules.iter().map(|m| m.sha256.as_str()).collect();
    let stamp_text = format!(
        "image {}\nmodules {}\nwanted {}\n",
        kernel.image.sha256,
        if modules_sums.is_empty() {
            "-".to_string()
        } else {
            modules_sums.join(" ")
        },
        wanted.join(" ")
    );
    if let Some(files) = cached_kernel_files(&dir, &kernel.release, &stamp_text) {
        return Ok(files);
    }
    // Extract into a private directory and move it into place, so a
    // concurrent run never sees a half-written one.
    let tmp = dir.with_file_name(format!(
        ".{}.tmp-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("modules"))
        .with_context(|| format!("creating {}", tmp.display()))?;

    let rel = &kernel.release;
    eprintln!("extracting vmlinuz {rel} from {}", kernel.image.file_name());
    let candidates = [
        format!("boot/vmlinuz-{rel}"),
        format!("usr/lib/modules/{rel}/vmlinuz"),
        format!("lib/modules/{rel}/vmlinuz"),
    ];
    let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
    let (_, vmlinuz) = read_one(&image, &refs)?;
    crate::host::fs::write_atomic(&tmp.join("vmlinuz"), &vmlinuz)?;

    // Split kernels keep some modules beside vmlinuz (EL8/9's kernel-core)
    // and the rest in a modules package: look in both.
    let mut packages = vec![(&kernel.image, image)];
    packages.extend(kernel.modules.iter().zip(modules_files));
    let names: Vec<&str> = packages.iter().map(|(p, _)| p.file_name()).collect();
    eprintln!(
        "extracting modules {} from {}",
        wanted.join(", "),
        names.join(" and ")
    );
    let files: Vec<PathBuf> = packages.iter().map(|(_, f)| f.clone()).collect();
    let order = extract_modules(&files, rel, wanted).with_context(|| {
        let what: Vec<String> = packages
            .iter()
            .map(|(p, _)| format!("{} {} ({})", p.name, p.version, p.url))
            .collect();
        format!("modules of {}", what.join(" + "))
    })?;
    let mut names = String::new();
    for (name, bytes) in order {
        let file = format!("{name}.ko");
        crate::host::fs::write_atomic(&tmp.join("modules").join(&file), &bytes)?;
        names.push_str(&file);
        names.push('\n');
    }
    crate::host::fs::write_atomic(&tmp.join("modules.list"), names.as_bytes())?;
    crate::host::fs::write_atomic(&tmp.join("stamp"), stamp_text.as_bytes())?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(err) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another run may have put the same files there first.
        return cached_kernel_files(&dir, &kernel.release, &stamp_text)
            .with_context(|| format!("moving {} to {}: {err}", tmp.display(), dir.display()));
    }
    cached_kernel_files(&dir, &kernel.release, &stamp_text)
        .with_context(|| format!("{} is incomplete after extraction", dir.display()))
}

/// The files of a completed extraction in `dir`, if its stamp matches.
fn cached_kernel_files(dir: &Path, release: &str, stamp_text: &str) -> Option<KernelFiles> {
    let stamp = std::fs::read_to_string(dir.join("stamp")).ok()?;
    if stamp != stamp_text {
        return None;
    }
    let modules: Vec<PathBuf> = std::fs::read_to_string(dir.join("modules.list"))
        .ok()?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| dir.join("modules").join(l))
        .collect();
    let vmlinuz = dir.join("vmlinuz");
    (vmlinuz.is_file() && modules.iter().all(|m| m.is_file())).then(|| KernelFiles {
        release: release.to_string(),
        vmlinuz,
        modules,
    })
}

/// Modules `wanted` plus their dependencies (from `.modinfo` `depends=`),
/// decompressed, in load order, found in any of `packages` (each holding part
/// of the release's `lib/modules/<release>/` tree). Scans the packages once
/// per dependency level.
pub fn extract_modules(
    packages: &[PathBuf],
    release: &str,
    wanted: &[&str],
) -> Result<Vec<(String, Vec<u8>)>> {
    let roots = [
        format!("lib/modules/{release}/"),
        format!("usr/lib/modules/{release}/"),
    ];
    let mut have: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    let mut builtin: BTreeSet<String> = BTreeSet::new();
    let mut need: BTreeSet<String> = wanted.iter().map(|w| module_key(w)).collect();
    let mut first_pass = true;
    while !need.is_empty() {
        let mut seen_tree = false;
        for deb in packages {
            for_each_entry(deb, |path, kind, reader| {
                let Some(rest) = roots.iter().find_map(|r| path.strip_prefix(r.as_str())) else {
                    return Ok(true);
                };
                seen_tree = true;
                if first_pass && rest == "modules.builtin" && matches!(kind, EntryKind::File) {
                    let mut text = String::new();
                    reader.read_to_string(&mut text)?;
                    builtin.extend(text.lines().filter_map(module_name_of));
                    return Ok(true);
                }
                if !matches!(kind, EntryKind::File) {
                    return Ok(true);
                }
                let Some(name) = module_name_of(rest) else {
                    return Ok(true);
                };
                if need.contains(&name) && !have.contains_key(&name) {
                    let mut raw = Vec::new();
                    reader.read_to_end(&mut raw)?;
                    let ko = decompress(rest, &raw)?;
                    modinfo(&ko).with_context(|| format!("{path} is not a loadable module"))?;
                    have.insert(name, ko);
                }
                Ok(true)
            })?;
        }
        if !seen_tree {
            bail!("{} has no lib/modules/{release}/ tree", shown(packages));
        }
        first_pass = false;
        let mut next = BTreeSet::new();
        for name in &need {
            match have.get(name) {
                Some(ko) => {
                    let list: Vec<String> = modinfo_value(ko, "depends")?
                        .unwrap_or_default()
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(module_key)
                        .collect();
                    for d in &list {
                        if !have.contains_key(d) && !builtin.contains(d) {
                            next.insert(d.clone());
                        }
                    }
                    deps.insert(name.clone(), list);
                }
                None if builtin.contains(name) => {}
                None => bail!(
                    "module \"{name}\" not found under lib/modules/{release}/ of {}",
                    shown(packages)
                ),
            }
        }
        need = next;
    }
    // Dependencies first (depth-first post-order over the wanted modules).
    fn visit(
        name: &str,
        deps: &HashMap<String, Vec<String>>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !done.insert(name.to_string()) {
            return;
        }
        for d in deps.get(name).into_iter().flatten() {
            visit(d, deps, done, order);
        }
        if deps.contains_key(name) {
            order.push(name.to_string());
        }
    }
    let mut done = BTreeSet::new();
    let mut order = Vec::new();
    for w in wanted {
        visit(&module_key(w), &deps, &mut done, &mut order);
    }
    Ok(order
        .into_iter()
        .map(|n| {
            let ko = have.remove(&n).expect("every ordered module was extracted");
            (n, ko)
        })
        .collect())
}

/// Package files for a message: `a.deb` or `a.rpm and b.rpm`.
fn shown(packages: &[PathBuf]) -> String {
    let names: Vec<String> = packages.iter().map(|p| p.display().to_string()).collect();
    names.join(" and ")
}

/// The static busybox binary of a `busybox-static` package, extracted into the cache.
pub fn busybox(pkg: &PackageRef) -> Result<PathBuf> {
    let out = crate::host::cache::cache_dir()
        .join("busybox")
        .join(&pkg.sha256[..16])
        .join("busybox");
    if out.is_file() {
        return Ok(out);
    }
    let deb = pkg.fetch()?;
    let (_, bytes) = read_one(&deb, &["bin/busybox", "usr/bin/busybox"])
        .with_context(|| format!("{} {} ({})", pkg.name, pkg.version, pkg.url))?;
    if !bytes.starts_with(b"\x7fELF") {
        bail!("{}: bin/busybox is not an ELF binary", pkg.url);
    }
    crate::host::fs::write_atomic(&out, &bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ar archive with the given members.
    pub(crate) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            );
            assert_eq!(header.len(), 60);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn tar_of(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder
                .append_data(&mut h, format!("./{path}"), *data)
                .unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            builder
                .append_link(&mut h, format!("./{path}"), target)
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 1)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// A minimal relocatable x86-64 ELF with a `.modinfo` section.
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        let info = modinfo.replace('\n', "\0") + "\0";
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let info_off = 64u64;
        let str_off = info_off + info.len() as u64;
        let sh_off = (str_off + shstrtab.len() as u64 + 7) & !7;
        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // entry
        elf.extend_from_slice(&0u64.to_le_bytes()); // phoff
        elf.extend_from_slice(&sh_off.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes()); // flags
        for v in [64u16, 0, 0, 64, 3, 2] {
            // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
            elf.extend_from_slice(&v.to_le_bytes());
        }
        elf.extend_from_slice(info.as_bytes());
        elf.extend_from_slice(shstrtab);
        elf.resize(sh_off as usize, 0);
        let section = |elf: &mut Vec<u8>, name: u32, kind: u32, off: u64, size: u64| {
            elf.extend_from_slice(&name.to_le_bytes());
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&0u64.to_le_bytes()); // flags
            elf.extend_from_slice(&0u64.to_le_bytes()); // addr
            elf.extend_from_slice(&off.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&0u32.to_le_bytes()); // link
            elf.extend_from_slice(&0u32.to_le_bytes()); // info
            elf.extend_from_slice(&1u64.to_le_bytes()); // align
            elf.extend_from_slice(&0u64.to_le_bytes()); // entsize
        };
        section(&mut elf, 0, 0, 0, 0);
        section(&mut elf, 1, 1, info_off, info.len() as u64); // .modinfo, PROGBITS
        section(&mut elf, 10, 3, str_off, shstrtab.len() as u64); // .shstrtab, STRTAB
        elf
    }

    #[test]
    fn reads_files_from_xz_data_tar_and_skips_odd_members() {
        let dir = crate::testing::scratch("deb-read");
        let data = xz(&tar_of(
            &[("usr/bin/busybox", b"\x7fELF busybox")],
            &[("bin/sh", "busybox")],
        ));
        let deb = dir.join("x.deb");
        std::fs::write(
            &deb,
            ar(&[
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", b"odd"),
                ("data.tar.xz", &data),
            ]),
        )
        .unwrap();
        let (path, bytes) = read_one(&deb, &["bin/busybox", "usr/bin/busybox"]).unwrap();
        assert_eq!(path, "usr/bin/busybox");
        assert_eq!(bytes, b"\x7fELF busybox");
        let err = format!("{:#}", read_one(&deb, &["bin/sh"]).unwrap_err());
        assert!(err.contains("only symlinks: bin/sh -> busybox"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_a_deb_is_an_error() {
        let dir = crate::testing::scratch("deb-bad");
        let deb = dir.join("bad.deb");
        std::fs::write(&deb, b"<html>not found</html>").unwrap();
        let err = format!("{:#}", read_one(&deb, &["x"]).unwrap_err());
        assert!(err.contains("not a .deb"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modules_come_with_dependencies_in_load_order_and_decompressed() {
        let dir = crate::testing::scratch("deb-mods");
        let rel = "9.9.9-1-amd64";
        let tun =
            fake_ko("license=GPL\ndepends=net-core,helper\nvermagic=9.9.9-1-amd64 SMP mod_unload");
        let net_core = fake_ko("depends=helper\nname=net_core");
        let helper = fake_ko("depends=\nname=helper");
        let data = tar_of(
            &[
                (
                    &format!("usr/lib/modules/{rel}/kernel/drivers/net/tun.ko.xz"),
                    &xz(&tun),
                ),
                (
                    &format!("usr/lib/modules/{rel}/kernel/net/core/net_core.ko"),
                    &net_core,
                ),
                (
                    &format!("usr/lib/modules/{rel}/kernel/lib/helper.ko.xz"),
                    &xz(&helper),
                ),
                (
                    &format!("usr/lib/modules/{rel}/kernel/lib/unrelated.ko"),
                    b"not even elf",
                ),
                (
                    &format!("usr/lib/modules/{rel}/modules.builtin"),
                    b"kernel/net/ipv6/ipv6.ko\n",
                ),
            ],
            &[],
        );
        let deb = dir.join("m.deb");
        std::fs::write(
            &deb,
            ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]),
        )
        .unwrap();
        let got = extract_modules(std::slice::from_ref(&deb), rel, &["tun", "ipv6"]).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["helper", "net_core", "tun"]);
        assert_eq!(got[2].1, tun);
        assert_eq!(
            modinfo_value(&got[2].1, "vermagic").unwrap().as_deref(),
            Some("9.9.9-1-amd64 SMP mod_unload")
        );
        let err = format!(
            "{:#}",
            extract_modules(std::slice::from_ref(&deb), rel, &["nosuch"]).unwrap_err()
        );
        assert!(err.contains("module \"nosuch\" not found"), "{err}");
        let err = format!(
            "{:#}",
            extract_modules(std::slice::from_ref(&deb), "1.0", &["tun"]).unwrap_err()
        );
        assert!(err.contains("no lib/modules/1.0/ tree"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// CentOS 7's `kernel` package: vmlinuz under /boot and every module,
    /// xz-compressed, in the same RPM.
    #[test]
    fn centos_7_kernel_rpm_gives_vmlinuz_and_decompressed_modules() {
        let dir = crate::testing::scratch("rpm-el7");
        let rel = "3.10.0-1160.el7.x86_64";
        let virtio_net = fake_ko(&format!(
            "depends=virtio_ring,virtio\nvermagic={rel} SMP mod_unload modversions"
        ));
        let virtio_ring = fake_ko("depends=virtio\nname=virtio_ring");
        let virtio = fake_ko("depends=\nname=virtio");
        let tun = fake_ko("depends=\nname=tun");
        let modules = |path: &str| format!("/lib/modules/{rel}/kernel/{path}");
        let paths = [
            modules("drivers/net/virtio_net.ko.xz"),
            modules("drivers/virtio/virtio_ring.ko.xz"),
            modules("drivers/virtio/virtio.ko.xz"),
            modules("drivers/net/tun.ko.xz"),
        ];
        let bodies = [xz(&virtio_net), xz(&virtio_ring), xz(&virtio), xz(&tun)];
        let vmlinuz = format!("/boot/vmlinuz-{rel}");
        let builtin = format!("/lib/modules/{rel}/modules.builtin");
        let mut files: Vec<(&str, &[u8])> = vec![
            (vmlinuz.as_str(), b"MZ bzImage"),
            (builtin.as_str(), b"kernel/drivers/block/loop.ko\n"),
        ];
        files.extend(
            paths
                .iter()
                .map(String::as_str)
                .zip(bodies.iter().map(Vec::as_slice)),
        );
        let rpm = crate::repo::rpm_payload::testing::package(
            &dir, "kernel", "3.10.0", "1160.el7", &files,
        );

        let (path, image) = read_one(&rpm, &[&format!("boot/vmlinuz-{rel}")]).unwrap();
        assert_eq!(path, format!("boot/vmlinuz-{rel}"));
        assert_eq!(image, b"MZ bzImage");
        let got = extract_modules(
            std::slice::from_ref(&rpm),
            rel,
            &["virtio_net", "tun", "loop"],
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["virtio", "virtio_ring", "virtio_net", "tun"]);
        assert_eq!(got[2].1, virtio_net, "decompressed for busybox insmod");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// EL8/9 split the kernel: kernel-core holds vmlinuz beside the core
    /// modules, kernel-modules the rest, whose dependencies may be in core.
    #[test]
    fn el9_modules_come_from_kernel_core_and_kernel_modules() {
        let dir = crate::testing::scratch("rpm-el9");
        let rel = "5.14.0-427.35.1.el9_4.x86_64";
        let tls = fake_ko("depends=\nname=tls");
        let tun = fake_ko("depends=\nname=tun");
        let sctp = fake_ko("depends=libcrc32c\nname=sctp");
        let crc = fake_ko("depends=\nname=libcrc32c");
        let under = |path: &str| format!("/lib/modules/{rel}/{path}");
        let (core_paths, core_bodies) = (
            [
                under("vmlinuz"),
                under("kernel/drivers/net/tun.ko.xz"),
                under("kernel/lib/libcrc32c.ko.xz"),
            ],
            [b"MZ el9".to_vec(), xz(&tun), xz(&crc)],
        );
        let core_files: Vec<(&str, &[u8])> = core_paths
            .iter()
            .map(String::as_str)
            .zip(core_bodies.iter().map(Vec::as_slice))
            .collect();
        let core = crate::repo::rpm_payload::testing::package(
            &dir,
            "kernel-core",
            "5.14.0",
            "427.35.1.el9_4",
            &core_files,
        );
        let (mod_paths, mod_bodies) = (
            [
                under("kernel/net/tls/tls.ko.xz"),
                under("kernel/net/sctp/sctp.ko.xz"),
            ],
            [xz(&tls), xz(&sctp)],
        );
        let mod_files: Vec<(&str, &[u8])> = mod_paths
            .iter()
            .map(String::as_str)
            .zip(mod_bodies.iter().map(Vec::as_slice))
            .collect();
        let modules = crate::repo::rpm_payload::testing::package(
            &dir,
            "kernel-modules",
            "5.14.0",
            "427.35.1.el9_4",
            &mod_files,
        );

        let (_, image) = read_one(&core, &[&format!("lib/modules/{rel}/vmlinuz")]).unwrap();
        assert_eq!(image, b"MZ el9");
        let got = extract_modules(
            &[core.clone(), modules.clone()],
            rel,
            &["tun", "tls", "sctp"],
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["tun", "tls", "libcrc32c", "sctp"]);
        // kernel-core alone lacks tls: the message names the package searched.
        let err = format!(
            "{:#}",
            extract_modules(std::slice::from_ref(&core), rel, &["tls"]).unwrap_err()
        );
        assert!(
            err.contains("module \"tls\" not found") && err.contains("kernel-core-"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Against the real archive (network): `cargo test -p xtask -- --ignored live_`.
#[cfg(test)]
mod live {
    #[test]
    #[ignore = "needs the Debian archive"]
    fn live_kernel_files() {
        for name in ["debian-11", "debian-12", "debian-13", "debian-unstable"] {
            let distro = crate::distro::find(name).unwrap();
            let kernel = crate::repo::debian::default_kernel(&distro).unwrap();
            let started = std::time::Instant::now();
            let files = super::kernel_files(&kernel, &["tun"]).unwrap();
            let bb =
                super::busybox(&crate::repo::debian::package(&distro, "busybox-static").unwrap())
                    .unwrap();
            eprintln!(
                "{name}: {files:?} busybox={} ({:.1?})",
                bb.display(),
                started.elapsed()
            );
            assert!(files.modules.iter().any(|m| m.ends_with("tun.ko")));
        }
    }
}
