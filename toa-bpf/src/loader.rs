//! Load, update, report and unload the pinned programs.
//!
//! Everything lives under [`PIN_DIR`]: the maps (by their names in the object),
//! the programs (`prog_*`), their links (`link_*`) and the record of the load
//! ([`crate::identity`]: which object, which cgroup). Pinned links keep the
//! programs attached after this process exits; removing the link pins detaches
//! them. The links are pinned last, so their presence means a complete load;
//! which capture links are pinned says which capture path runs. Whether the
//! programs still run is read from the links themselves (a link can be
//! detached under its pin): [`Status::problems`], and a load starts over
//! when a pinned link does not run its program. Loads and unloads take a lock
//! ([`crate::lock`]), one at a time.
//!
//! A load over attached programs of another object (an upgrade) or for
//! another cgroup replaces the programs in place: the new object's programs
//! are loaded with the pinned maps (the socket storage above all, so open
//! connections keep their client) and each cgroup link is pointed at its new
//! program (BPF_LINK_UPDATE) or, to move it, replaced by a link at the new
//! cgroup before the old one is detached.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, FExit, ProgramError, SockOps};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::capture::{Capture, CaptureChoice, FEXIT_PROGRAM, SOCKOPS_PROGRAM};
use crate::counters::COUNTERS;
use crate::identity::{self, Identity, Object, Record};
use crate::lock::Lock;
use crate::maps::{self, SettingsValue};
use crate::scope::{self, CgroupChoice, Target};
use crate::settings::{Cidr, Settings};
use crate::system;

pub const PIN_DIR: &str = "/sys/fs/bpf/toa";

/// The programs that rewrite answers: (name in the object, what the kernel must offer).
const GETPEERNAME: [(&str, &str); 2] = [
    (
        "toa_getpeername4",
        "cgroup getpeername hooks (Linux 5.8) with socket storage (5.10)",
    ),
    (
        "toa_getpeername6",
        "cgroup getpeername hooks (Linux 5.8) with socket storage (5.10)",
    ),
];

/// What `load` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Programs loaded, attached and pinned, taking the TOA this way.
    Attached(Capture),
    /// Already attached: the settings were written into the pinned maps.
    Updated(Capture),
    /// Attached already from another object (an upgrade) or at another
    /// cgroup: the programs were replaced in place, with the pinned socket
    /// storage, so open connections keep their client.
    Replaced {
        capture: Capture,
        /// The object that ran before (`None`: pinned by a toa that did not
        /// record it).
        previous: Option<Identity>,
        /// What else changed, one line each (a map made anew, a cgroup moved).
        notes: Vec<String>,
    },
    /// Attached already, but the pinned maps cannot serve the new programs:
    /// everything was detached and loaded afresh; open connections lost
    /// their client.
    Reloaded { capture: Capture, why: String },
}

impl Loaded {
    pub fn capture(&self) -> Capture {
        match self {
            Loaded::Attached(c) | Loaded::Updated(c) => *c,
            Loaded::Replaced { capture, .. } | Loaded::Reloaded { capture, .. } => *capture,
        }
    }
}

/// What `status` reports of a loaded eBPF mode.
#[derive(Debug, Clone)]
pub struct Status {
    pub settings: Settings,
    pub capture: Capture,
    /// Why the programs do not run though their pins exist (a link detached
    /// by other means, attached elsewhere, or not a link): empty when every
    /// link is attached where a load puts it.
    pub problems: Vec<String>,
    /// Where the cgroup programs are attached: the cgroup v2 root, toa's own
    /// mount of it under /run/toa on a cgroup v1 host, or the one cgroup a
    /// load was scoped to (`None`: no cgroup2 mount is visible here).
    pub cgroup: Option<PathBuf>,
    /// Whether `cgroup` is one cgroup (`--cgroup`), not the root.
    pub scoped: bool,
    /// The object the programs come from (`None`: loaded by a toa that did
    /// not record it); compare with [`embedded`].
    pub object: Option<Identity>,
    /// Counter name and its sum over all CPUs, in [`COUNTERS`] order.
    pub counters: Vec<(&'static str, u64)>,
    /// How many CPUs the per-CPU counters were summed over.
    pub cpus: usize,
}

/// The identity of the object built into this binary.
pub fn embedded() -> Identity {
    Object::embedded().identity()
}

/// Where a load pins and what it attaches the cgroup programs to: the
/// machine's ([`Place::system`]), or a test's own.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub pin_dir: PathBuf,
    /// Where a load attaches when neither `--cgroup` nor an earlier load
    /// says. None: the cgroup v2 root (mounted privately on a cgroup v1 host).
    pub cgroup: Option<PathBuf>,
    /// Locked around a load and an unload.
    pub lock: PathBuf,
}

impl Place {
    pub fn system() -> Place {
        Place {
            pin_dir: PathBuf::from(PIN_DIR),
            cgroup: None,
            lock: Path::new(system::RUN_DIR).join("bpf.lock"),
        }
    }

    fn pin(&self, name: &str) -> PathBuf {
        self.pin_dir.join(name)
    }

    fn link_pin(&self, program: &str) -> PathBuf {
        self.pin(&format!("link_{program}"))
    }

    fn prog_pin(&self, program: &str) -> PathBuf {
        self.pin(&format!("prog_{program}"))
    }

    fn record(&self) -> Result<Option<Record>> {
        identity::read(&self.pin(identity::PIN))
    }

    /// Every link pin a load can make, capture paths included.
    fn all_link_pins(&self) -> Vec<PathBuf> {
        let captures = Capture::ALL.into_iter().map(Capture::program);
        GETPEERNAME
            .iter()
            .map(|(p, _)| *p)
            .chain(captures)
            .map(|p| self.link_pin(p))
            .collect()
    }
}

fn exists(path: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The capture path of a complete load, read from the link pins.
fn attached(place: &Place) -> std::io::Result<Option<Capture>> {
    for (name, _) in GETPEERNAME {
        if !exists(&place.link_pin(name))? {
            return Ok(None);
        }
    }
    for capture in Capture::ALL {
        if exists(&place.link_pin(capture.program()))? {
            return Ok(Some(capture));
        }
    }
    Ok(None)
}

/// The link each program of a load with `capture` has: (program, link type,
/// attach type).
fn expected_links(capture: Capture) -> Vec<(&'static str, u32, u32)> {
    use crate::link::*;
    let capture_link = match capture {
        Capture::Fexit => (capture.program(), LINK_TYPE_TRACING, ATTACH_TRACE_FEXIT),
        Capture::SockOps => (capture.program(), LINK_TYPE_CGROUP, ATTACH_CGROUP_SOCK_OPS),
    };
    vec![
        capture_link,
        (
            GETPEERNAME[0].0,
            LINK_TYPE_CGROUP,
            ATTACH_CGROUP_INET4_GETPEERNAME,
        ),
        (
            GETPEERNAME[1].0,
            LINK_TYPE_CGROUP,
            ATTACH_CGROUP_INET6_GETPEERNAME,
        ),
    ]
}

/// The cgroup the loaded programs are attached to, as its directory, its id
/// (the cgroup v2 directory's inode number) and whether it is the root: the
/// one the load recorded, else where a load at `place` attaches. None when
/// it cannot be told without mounting anything.
fn expected_cgroup(place: &Place, record: Option<&Record>) -> Option<(PathBuf, u64, bool)> {
    use std::os::unix::fs::MetadataExt;
    let root = system::mounted_cgroup2().ok()??;
    if let Some(r) = record {
        let dir = if r.cgroup.is_empty() {
            root
        } else {
            root.join(&r.cgroup)
        };
        return Some((dir, r.cgroup_id, r.cgroup.is_empty()));
    }
    let path = place.cgroup.clone().unwrap_or_else(|| root.clone());
    let ino = std::fs::metadata(&path).ok()?.ino();
    Some((path.clone(), ino, path == root))
}

/// Why the pinned links of a load with `capture` do not make the programs
/// run: each must be a link of the right kind, attached, and (cgroup links)
/// attached to the cgroup a load uses. Empty when all is well.
fn link_problems(place: &Place, capture: Capture, record: Option<&Record>) -> Vec<String> {
    let cgroup = expected_cgroup(place, record);
    let mut problems = Vec::new();
    for (name, link_type, attach_type) in expected_links(capture) {
        let path = place.link_pin(name);
        let info = match crate::link::pinned_info(&path) {
            Ok(info) => info,
            Err(e) => {
                problems.push(format!("{}: {e:#}", path.display()));
                continue;
            }
        };
        if info.link_type != link_type || info.attach_type != attach_type {
            problems.push(format!(
                "{name}: its pinned link (id {}) is of link type {} attach type {}, not {link_type} \
                 {attach_type}",
                info.id, info.link_type, info.attach_type
            ));
            continue;
        }
        match (info.cgroup_id, &cgroup) {
            (Some(0), _) => problems.push(format!(
                "{name} is detached: its link (id {}) is pinned but attached to no cgroup",
                info.id
            )),
            (Some(id), Some((path, want, _))) if id != *want => problems.push(format!(
                "{name} is attached to cgroup id {id}, not to {} (id {want})",
                path.display()
            )),
            _ => {}
        }
    }
    problems
}

/// Whether the eBPF mode is attached (every link pinned), read without BPF
/// system calls. Err with `PermissionDenied` when the bpffs cannot be looked
/// into (it is root's alone on most systems).
pub fn pinned() -> std::io::Result<bool> {
    Ok(attached(&Place::system())?.is_some())
}

/// Loads and attaches the programs with `settings`, or, when they are already
/// attached, writes `settings` into the pinned maps (no detach, no gap).
/// `choice` picks the capture path; `Auto` takes fexit where the kernel
/// accepts it and sock_ops otherwise. `cgroup` picks where the cgroup
/// programs go ([`CgroupChoice`]). Attached programs of another object (an
/// upgrade) or at another cgroup are replaced in place ([`Loaded::Replaced`]).
pub fn load(settings: &Settings, choice: CaptureChoice, cgroup: &CgroupChoice) -> Result<Loaded> {
    system::require_root()?;
    system::require_no_module()?;
    system::ensure_bpffs()?;
    load_at(
        &Place::system(),
        &Object::embedded(),
        settings,
        choice,
        cgroup,
    )
}

/// [`load`] of `object` at `place`, under its lock.
pub(crate) fn load_at(
    place: &Place,
    object: &Object,
    settings: &Settings,
    choice: CaptureChoice,
    cgroup: &CgroupChoice,
) -> Result<Loaded> {
    let _lock = Lock::take(&place.lock)?;
    let record = place.record()?;
    // Pins whose links no longer run the programs (detached by other means):
    // start over below, as after a load that stopped half way.
    let attached =
        attached(place)?.filter(|c| link_problems(place, *c, record.as_ref()).is_empty());
    let target = target(place, cgroup, record.as_ref())?;
    if let Some(capture) = attached {
        if !choice.allows(capture) {
            bail!(
                "the eBPF mode is attached with the {} capture ({capture}); run `toa bpf unload` \
                 first to change it",
                capture.word()
            );
        }
        let same_object = record.as_ref().map(|r| &r.object) == Some(&object.identity());
        let same_cgroup = match &record {
            Some(r) => r.cgroup_id == target.id,
            None => cgroup_links_at(place, target.id),
        };
        if same_object && same_cgroup {
            let mut m = PinnedMaps::open(place)?;
            write_settings(
                &mut m.settings,
                &mut m.trusted_v4,
                &mut m.trusted_v6,
                settings,
            )?;
            return Ok(Loaded::Updated(capture));
        }
        match replace(place, object, settings, capture, &target)? {
            Replace::Done(notes) => {
                return Ok(Loaded::Replaced {
                    capture,
                    previous: record.map(|r| r.object),
                    notes,
                })
            }
            Replace::Incompatible(why) => {
                remove_pins(place)?;
                let capture =
                    attach_fresh(place, object, settings, choice, &target).inspect_err(|_| {
                        let _ = remove_pins(place);
                    })?;
                return Ok(Loaded::Reloaded { capture, why });
            }
        }
    }
    // A load that stopped half way leaves pins without links: start over.
    remove_pins(place)?;
    let capture = attach_fresh(place, object, settings, choice, &target).inspect_err(|_| {
        let _ = remove_pins(place);
    })?;
    Ok(Loaded::Attached(capture))
}

/// The cgroup a load attaches to: the one asked for, else the one the
/// loaded programs are attached to, else the place's default (the root).
fn target(place: &Place, choice: &CgroupChoice, record: Option<&Record>) -> Result<Target> {
    let root = system::cgroup2_root()?;
    let target = match (choice, record) {
        (CgroupChoice::Root, _) => scope::resolve(&root, Path::new("/"))?,
        (CgroupChoice::Path(p), _) => scope::resolve(&root, p)?,
        (CgroupChoice::Keep, Some(r)) => scope::resolve(&root, &Path::new("/").join(&r.cgroup))
            .with_context(|| {
                format!(
                    "the eBPF mode was attached to the cgroup /{} and a load without --cgroup \
                     keeps it; give --cgroup PATH for another one, or --cgroup / for every \
                     process",
                    r.cgroup
                )
            })?,
        (CgroupChoice::Keep, None) => match &place.cgroup {
            Some(c) => scope::resolve(&root, c)?,
            None => scope::resolve(&root, Path::new("/"))?,
        },
    };
    if target.is_root() && !system::is_hierarchy_root(&target.dir) {
        bail!(
            "the cgroup v2 root seen here, {}, is a cgroup namespace's: the programs would cover \
             only its own processes (a container's). Mount the host's cgroup v2 root into the \
             container and name it (--cgroup-root), or name a cgroup with --cgroup",
            target.dir.display()
        );
    }
    // This host's tests attach only to cgroups they made.
    #[cfg(test)]
    assert!(
        !target.is_root(),
        "a test would attach at the cgroup v2 root"
    );
    Ok(target)
}

/// Whether every pinned cgroup link is attached to cgroup `id` (pins of a
/// toa that recorded no cgroup).
fn cgroup_links_at(place: &Place, id: u64) -> bool {
    place.all_link_pins().iter().all(|p| {
        !p.exists()
            || crate::link::pinned_info(p).is_ok_and(|i| i.cgroup_id.is_none_or(|c| c == id))
    })
}

fn attach_fresh(
    place: &Place,
    object: &Object,
    settings: &Settings,
    choice: CaptureChoice,
    target: &Target,
) -> Result<Capture> {
    let mut ebpf = EbpfLoader::new().load(object.bytes).map_err(|e| {
        anyhow!(
            "the kernel refused the eBPF mode's maps: {e}. They need BTF-described socket \
             storage (BPF_MAP_TYPE_SK_STORAGE) and LPM tries; on this kernel use toa.ko"
        )
    })?;
    std::fs::create_dir_all(&place.pin_dir)
        .with_context(|| format!("creating {}", place.pin_dir.display()))?;
    let mut taken = take_maps(&mut ebpf)?;
    write_settings_into(&mut taken, settings)?;
    for (name, map) in &taken {
        map.pin(place.pin(name))
            .with_context(|| format!("pinning map {name}"))?;
    }

    let cgroup = &target.dir;
    let file = File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    // The capture first: a client is stored before any answer is rewritten.
    let (capture, mut links) = match choice {
        CaptureChoice::Only(Capture::Fexit) => (Capture::Fexit, attach_fexit(place, &mut ebpf)?),
        CaptureChoice::Only(Capture::SockOps) => {
            (Capture::SockOps, attach_sockops(place, &mut ebpf, &file)?)
        }
        CaptureChoice::Auto => match attach_fexit(place, &mut ebpf) {
            Ok(links) => (Capture::Fexit, links),
            // Refused here: the fallback serves every kernel >= 5.10.
            Err(_) => (Capture::SockOps, attach_sockops(place, &mut ebpf, &file)?),
        },
    };
    // The hook (getpeername4/6) comes from each program's section name.
    for (name, needs) in GETPEERNAME {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        prog.load().map_err(|e| refused(name, needs, e))?;
        // Cgroup links take no flags: they always allow other programs beside them.
        let id = prog
            .attach(&file, CgroupAttachMode::Single)
            .map_err(|e| refused(name, needs, e))?;
        links.push((name, FdLink::try_from(prog.take_link(id)?)?));
        prog.pin(place.prog_pin(name))?;
    }
    record(place, object, target)?;
    for (name, link) in links {
        link.pin(place.link_pin(name))
            .with_context(|| format!("pinning the link of {name}"))?;
    }
    Ok(capture)
}

fn record(place: &Place, object: &Object, target: &Target) -> Result<()> {
    identity::write(
        &place.pin(identity::PIN),
        &Record {
            object: object.identity(),
            cgroup: target.rel.clone(),
            cgroup_id: target.id,
        },
    )
}

enum Replace {
    /// Replaced; what else changed.
    Done(Vec<String>),
    /// The pinned socket storage cannot serve the new programs: why.
    Incompatible(String),
}

/// Why the map pinned at `pin` cannot serve programs that expect `def`.
fn map_mismatch(pin: &Path, def: &aya_obj::Map) -> Option<String> {
    let have = match identity::pinned_map_info(pin) {
        Ok(i) => i,
        Err(e) => return Some(format!("{}: {e:#}", pin.display())),
    };
    let want = identity::MapInfo {
        map_type: def.map_type(),
        id: have.id,
        key_size: def.key_size(),
        value_size: def.value_size(),
        max_entries: def.max_entries(),
        map_flags: def.map_flags(),
        name: have.name,
    };
    (have != want).then(|| {
        format!(
            "type {} key {} value {} entries {} flags {:#x} pinned, type {} key {} value {} \
             entries {} flags {:#x} wanted",
            have.map_type,
            have.key_size,
            have.value_size,
            have.max_entries,
            have.map_flags,
            want.map_type,
            want.key_size,
            want.value_size,
            want.max_entries,
            want.map_flags
        )
    })
}

/// Replaces the attached programs with `object`'s, at `target`, keeping
/// every pinned map whose layout the new programs share (a map that changed
/// is made anew and pinned in its place); the socket storage must be kept,
/// else nothing is changed and [`Replace::Incompatible`] says why.
fn replace(
    place: &Place,
    object: &Object,
    settings: &Settings,
    capture: Capture,
    target: &Target,
) -> Result<Replace> {
    let parsed =
        aya_obj::Object::parse(object.bytes).map_err(|e| anyhow!("reading the BPF object: {e}"))?;
    let mut keep = Vec::new();
    let mut notes = Vec::new();
    for name in maps::ALL {
        let def = parsed
            .maps
            .get(name)
            .with_context(|| format!("map {name} missing from the BPF object"))?;
        match map_mismatch(&place.pin(name), def) {
            None => keep.push(name),
            Some(why) if name == maps::CLIENTS => {
                return Ok(Replace::Incompatible(format!(
                    "the socket storage ({name}) of the loaded programs does not fit the new \
                     ones ({why})"
                )))
            }
            Some(why) => notes.push(format!(
                "{name} changed layout ({why}): made anew{}",
                if name == maps::COUNTERS {
                    ", the counters start from zero"
                } else {
                    ""
                }
            )),
        }
    }
    let mut loader = EbpfLoader::new();
    for name in &keep {
        loader.map_pin_path(name, place.pin(name));
    }
    let mut ebpf = loader
        .load(object.bytes)
        .map_err(|e| anyhow!("loading the new BPF object with the pinned maps: {e}"))?;
    let mut taken = take_maps(&mut ebpf)?;
    write_settings_into(&mut taken, settings)?;
    for (name, map) in &taken {
        if !keep.contains(name) {
            pin_over(&place.pin(name), |tmp| {
                map.pin(tmp).map_err(anyhow::Error::from)
            })
            .with_context(|| format!("pinning the new map {name}"))?;
        }
    }
    let file =
        File::open(&target.dir).with_context(|| format!("opening {}", target.dir.display()))?;
    let mut moved = false;
    for (name, _, _) in expected_links(capture) {
        moved |= replace_program(place, &mut ebpf, name, &file, target.id)?;
    }
    if moved {
        notes.push(format!(
            "the cgroup programs moved to {}",
            if target.is_root() {
                "the cgroup v2 root (every process)".to_string()
            } else {
                format!("the cgroup /{}", target.rel)
            }
        ));
    }
    record(place, object, target)?;
    Ok(Replace::Done(notes))
}

/// Pins with `pin` (given a path) at a temporary name, then renames that over
/// `path`: the pin is never missing.
fn pin_over(path: &Path, pin: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = crate::identity::beside(path);
    let _ = std::fs::remove_file(&tmp);
    pin(&tmp)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Loads program `name` of `ebpf` and makes the pinned link run it: in place
/// (BPF_LINK_UPDATE) when the link is a cgroup link attached to `cgroup_id`,
/// else by a new link (at `cgroup`, for a cgroup program) pinned over the old
/// one, which is then detached. True when a cgroup link was moved.
fn replace_program(
    place: &Place,
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
    cgroup_id: u64,
) -> Result<bool> {
    let link_pin = place.link_pin(name);
    let info = crate::link::pinned_info(&link_pin)?;
    let in_place = info.cgroup_id == Some(cgroup_id);
    let new_link: Option<FdLink> = if name == FEXIT_PROGRAM.0 {
        let btf = Btf::from_sys_fs().map_err(|e| anyhow!("the kernel's BTF: {e}"))?;
        let (_, function, needs) = FEXIT_PROGRAM;
        let prog: &mut FExit = program(ebpf, name)?;
        prog.load(function, &btf)
            .map_err(|e| refused(name, needs, e))?;
        // Tracing links cannot be updated: the new one runs beside the old
        // one for a moment (a connection then is stored twice, alike).
        let id = prog.attach().map_err(|e| refused(name, needs, e))?;
        let link = FdLink::from(prog.take_link(id)?);
        pin_over(&place.prog_pin(name), |p| Ok(prog.pin(p)?))?;
        Some(link)
    } else if name == SOCKOPS_PROGRAM.0 {
        let needs = SOCKOPS_PROGRAM.1;
        let prog: &mut SockOps = program(ebpf, name)?;
        prog.load().map_err(|e| refused(name, needs, e))?;
        let link = if in_place {
            crate::link::update_pinned(&link_pin, prog.fd()?.as_fd())?;
            None
        } else {
            let id = prog
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| refused(name, needs, e))?;
            Some(FdLink::try_from(prog.take_link(id)?)?)
        };
        pin_over(&place.prog_pin(name), |p| Ok(prog.pin(p)?))?;
        link
    } else {
        let needs = GETPEERNAME[0].1;
        let prog: &mut CgroupSockAddr = program(ebpf, name)?;
        prog.load().map_err(|e| refused(name, needs, e))?;
        let link = if in_place {
            crate::link::update_pinned(&link_pin, prog.fd()?.as_fd())?;
            None
        } else {
            let id = prog
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| refused(name, needs, e))?;
            Some(FdLink::try_from(prog.take_link(id)?)?)
        };
        pin_over(&place.prog_pin(name), |p| Ok(prog.pin(p)?))?;
        link
    };
    let Some(link) = new_link else {
        return Ok(false);
    };
    let old = crate::link::obj_get(&link_pin)?;
    pin_over(&link_pin, |p| {
        link.pin(p)
            .map(|_| ())
            .with_context(|| format!("pinning the new link of {name}"))
    })?;
    crate::link::detach(&old)?;
    Ok(info.cgroup_id.is_some())
}

type Links = Vec<(&'static str, FdLink)>;

fn attach_sockops(place: &Place, ebpf: &mut Ebpf, cgroup: &File) -> Result<Links> {
    let (name, needs) = SOCKOPS_PROGRAM;
    let prog: &mut SockOps = program(ebpf, name)?;
    prog.load().map_err(|e| refused(name, needs, e))?;
    let id = prog
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| refused(name, needs, e))?;
    let link = FdLink::try_from(prog.take_link(id)?)?;
    prog.pin(place.pin(&format!("prog_{name}")))?;
    Ok(vec![(name, link)])
}

/// Attached, or not at all: a program left attached beside the fallback
/// would count a connection twice.
fn attach_fexit(place: &Place, ebpf: &mut Ebpf) -> Result<Links> {
    let btf = Btf::from_sys_fs().map_err(|e| {
        anyhow!(
            "the fexit capture needs the kernel's BTF: /sys/kernel/btf/vmlinux: {e}; \
             use --capture sock-ops"
        )
    })?;
    let (name, function, needs) = FEXIT_PROGRAM;
    let prog: &mut FExit = program(ebpf, name)?;
    let attached = (|| -> Result<FdLink> {
        prog.load(function, &btf)
            .map_err(|e| refused(name, needs, e))?;
        let id = prog.attach().map_err(|e| refused(name, needs, e))?;
        let link = FdLink::from(prog.take_link(id)?);
        prog.pin(place.pin(&format!("prog_{name}")))?;
        Ok(link)
    })();
    match attached {
        Ok(link) => Ok(vec![(name, link)]),
        Err(e) => {
            // Detaches whatever the program still holds.
            let _ = prog.unload();
            Err(e)
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?;
    Ok(p.try_into()?)
}

/// A refusal by the kernel, with what the program needs and where to go instead.
fn refused(name: &str, needs: &str, e: ProgramError) -> anyhow::Error {
    let detail = match &e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{io_error}; verifier log (end):\n{}", tail.join("\n"))
        }
        // aya's attach errors name the system call; the errno is their source.
        other => {
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    };
    anyhow!(
        "this kernel does not support the eBPF mode: it refused {name}, which needs {needs}: \
         {detail}\nUse toa.ko on this kernel."
    )
}

/// The object's maps, each taken out of `ebpf` by its name. They live to the
/// end of a load: the programs load with their descriptors.
fn take_maps(ebpf: &mut Ebpf) -> Result<Vec<(&'static str, Map)>> {
    maps::ALL
        .into_iter()
        .map(|name| {
            let map = ebpf
                .take_map(name)
                .with_context(|| format!("map {name} missing from the BPF object"))?;
            Ok((name, map))
        })
        .collect()
}

/// [`write_settings`] into the maps of that name among `taken`.
fn write_settings_into(taken: &mut [(&'static str, Map)], s: &Settings) -> Result<()> {
    let at = |name: &str| {
        taken
            .iter()
            .position(|(n, _)| *n == name)
            .with_context(|| format!("map {name} missing from the BPF object"))
    };
    let which = [
        at(maps::SETTINGS)?,
        at(maps::TRUSTED_V4)?,
        at(maps::TRUSTED_V6)?,
    ];
    let [settings, v4, v6] = taken.get_disjoint_mut(which).context("the settings maps")?;
    write_settings(&mut settings.1, &mut v4.1, &mut v6.1, s)
}

/// Writes `s` into the maps. Trusted entries are added before the settings
/// switch to them and stale ones removed after, so no connection sees an
/// empty list in between.
fn write_settings(settings: &mut Map, v4: &mut Map, v6: &mut Map, s: &Settings) -> Result<()> {
    let mut v4: LpmTrie<_, maps::TrustedV4, u8> = LpmTrie::try_from(v4)?;
    let mut v6: LpmTrie<_, maps::TrustedV6, u8> = LpmTrie::try_from(v6)?;
    let want4: Vec<Key<maps::TrustedV4>> =
        s.trusted_proxies.iter().filter_map(maps::v4_key).collect();
    let want6: Vec<Key<maps::TrustedV6>> =
        s.trusted_proxies.iter().filter_map(maps::v6_key).collect();
    for k in &want4 {
        v4.insert(k, 1, 0).context("adding a trusted IPv4 proxy")?;
    }
    for k in &want6 {
        v6.insert(k, 1, 0).context("adding a trusted IPv6 proxy")?;
    }
    let mut array: Array<_, SettingsValue> = Array::try_from(settings)?;
    array
        .set(0, SettingsValue::encode(s), 0)
        .context("writing the settings map")?;
    remove_stale(&mut v4, &want4).context("removing a trusted IPv4 proxy")?;
    remove_stale(&mut v6, &want6).context("removing a trusted IPv6 proxy")?;
    Ok(())
}

/// Removes the trie's entries that `want` does not hold.
fn remove_stale<K: aya::Pod + PartialEq>(
    trie: &mut LpmTrie<&mut MapData, K, u8>,
    want: &[Key<K>],
) -> Result<()> {
    let have: Vec<Key<K>> = trie.keys().filter_map(|k| k.ok()).collect();
    for k in have {
        let kept = want
            .iter()
            .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data());
        if !kept {
            trie.remove(&k)?;
        }
    }
    Ok(())
}

struct PinnedMaps {
    settings: Map,
    trusted_v4: Map,
    trusted_v6: Map,
    counters: Map,
}

impl PinnedMaps {
    fn open(place: &Place) -> Result<PinnedMaps> {
        let open = |name: &str| -> Result<Map> {
            let path = place.pin(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening the pinned map {}", path.display()))?;
            Ok(Map::from_map_data(data)?)
        };
        Ok(PinnedMaps {
            settings: open(maps::SETTINGS)?,
            trusted_v4: open(maps::TRUSTED_V4)?,
            trusted_v6: open(maps::TRUSTED_V6)?,
            counters: open(maps::COUNTERS)?,
        })
    }
}

/// Detaches and forgets everything: removing the link pins detaches the
/// programs (open connections then get the kernel's answers again); the maps
/// and socket storage go when their last reference does.
pub fn unload() -> Result<bool> {
    system::require_root()?;
    let place = Place::system();
    let _lock = Lock::take(&place.lock)?;
    let was = unload_locked(&place)?;
    // A cgroup v1 host: the cgroup2 mount toa made goes with the programs.
    system::release_private_cgroup2()?;
    Ok(was)
}

/// [`unload`] at `place`, under its lock.
#[cfg(test)]
pub(crate) fn unload_at(place: &Place) -> Result<bool> {
    let _lock = Lock::take(&place.lock)?;
    unload_locked(place)
}

fn unload_locked(place: &Place) -> Result<bool> {
    let was = place.pin_dir.exists();
    remove_pins(place)?;
    Ok(was)
}

fn remove_pins(place: &Place) -> Result<()> {
    let dir = &place.pin_dir;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    // Unpinning alone releases a link later (after an RCU grace period, from a
    // work queue): detach first, so that when unload returns no cgroup
    // program runs. Tracing (fexit) links have no detach; their programs may
    // run a moment longer, storing clients nothing reads any more.
    for path in place.all_link_pins() {
        if path.exists() {
            crate::link::detach_pinned(&path)
                .with_context(|| format!("detaching {}", path.display()))?;
        }
    }
    // Links first: programs stop running before their maps are unpinned.
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for p in paths {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// The settings and summed counters of the loaded eBPF mode; `None` when it
/// is not loaded.
pub fn status() -> Result<Option<Status>> {
    status_at(&Place::system())
}

pub(crate) fn status_at(place: &Place) -> Result<Option<Status>> {
    let Some(capture) = attached(place)? else {
        return Ok(None);
    };
    let record = place.record()?;
    let m = PinnedMaps::open(place)?;
    let array: Array<_, SettingsValue> = Array::try_from(&m.settings)?;
    let mut settings = array
        .get(&0, 0)
        .context("reading the settings map")?
        .decode();
    let v4: LpmTrie<_, maps::TrustedV4, u8> = LpmTrie::try_from(&m.trusted_v4)?;
    for k in v4.keys().filter_map(|k| k.ok()) {
        settings.trusted_proxies.push(Cidr {
            addr: IpAddr::from(k.data()),
            prefix: k.prefix_len() as u8,
        });
    }
    let v6: LpmTrie<_, maps::TrustedV6, u8> = LpmTrie::try_from(&m.trusted_v6)?;
    for k in v6.keys().filter_map(|k| k.ok()) {
        settings.trusted_proxies.push(Cidr {
            addr: IpAddr::from(k.data()),
            prefix: k.prefix_len() as u8,
        });
    }
    let per_cpu: PerCpuArray<_, u64> = PerCpuArray::try_from(&m.counters)?;
    let mut counters = Vec::new();
    let mut cpus = 0;
    // Counters are only ever appended: the programs of an earlier release
    // (loaded until `toa bpf load` replaces them) keep a prefix of ours.
    let loaded = per_cpu.len() as usize;
    for (i, name) in COUNTERS.iter().enumerate().take(loaded) {
        let values = per_cpu
            .get(&(i as u32), 0)
            .with_context(|| format!("reading counter {name}"))?;
        cpus = values.len();
        counters.push((*name, values.iter().sum()));
    }
    Ok(Some(Status {
        settings,
        capture,
        problems: link_problems(place, capture, record.as_ref()),
        cgroup: expected_cgroup(place, record.as_ref()).map(|(path, _, _)| path.clone()),
        scoped: expected_cgroup(place, record.as_ref()).is_some_and(|(_, _, root)| !root),
        object: record.map(|r| r.object),
        counters,
        cpus,
    }))
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
