//! What a load leaves next to its links besides the programs and their maps:
//! which object it loaded (the toa version and the sha256 of the BPF object)
//! and which cgroup the cgroup programs are attached to. A bpffs holds only
//! BPF objects, so this is a one-entry array map made here and pinned as
//! [`PIN`]. A later load tells an upgrade (the programs are replaced in
//! place) from a change of settings by it, and `status`, `unload` and a load
//! without `--cgroup` find the cgroup again.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::link::{bpf, info_by_fd, obj_get};

/// Its pin name, next to the maps and links.
pub const PIN: &str = "toa_loaded";

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// Bumped when [`Value`] changes; a record of another format is not read.
const FORMAT: u32 = 1;
const VERSION_LEN: usize = 64;
/// PATH_MAX: a cgroup path relative to the root fits.
const CGROUP_LEN: usize = 4096;

/// The map's value.
#[repr(C)]
#[derive(Clone, Copy)]
struct Value {
    format: u32,
    cgroup_len: u32,
    cgroup_id: u64,
    sha256: [u8; 32],
    version: [u8; VERSION_LEN],
    cgroup: [u8; CGROUP_LEN],
}

/// A BPF object as a load knows it.
#[derive(Debug, Clone, Copy)]
pub struct Object<'a> {
    pub bytes: &'a [u8],
    /// The toa version that built it.
    pub version: &'a str,
}

impl Object<'static> {
    /// The object built into this binary.
    pub fn embedded() -> Object<'static> {
        Object {
            bytes: crate::OBJECT,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

impl Object<'_> {
    pub fn identity(&self) -> Identity {
        Identity {
            version: self.version.chars().take(VERSION_LEN).collect(),
            sha256: Sha256::digest(self.bytes).into(),
        }
    }
}

/// Which object: two loads of one identity run the same programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub version: String,
    pub sha256: [u8; 32],
}

impl fmt::Display for Identity {
    /// `0.5.0 (object sha256 1a2b3c4d5e6f)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (object sha256 ", self.version)?;
        for b in &self.sha256[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// What a load recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub object: Identity,
    /// The cgroup, relative to the cgroup v2 root ("" for the root itself).
    pub cgroup: String,
    /// Its id (the directory's inode number) when attached.
    pub cgroup_id: u64,
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The start of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// The name the object gave the map, NUL-padded.
    pub name: [u8; 16],
}

/// What the map pinned at `path` is.
pub fn pinned_map_info(path: &Path) -> Result<MapInfo> {
    let fd = obj_get(path)?;
    let mut info = MapInfo::default();
    info_by_fd(&fd, &mut info)?;
    Ok(info)
}

/// Where a new pin waits before it is renamed over `path` (a bpffs refuses
/// names with a dot).
pub fn beside(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("_new");
    path.with_file_name(name)
}

/// Records `r` at `path` (a new map pinned over the old one, if any).
pub fn write(path: &Path, r: &Record) -> Result<()> {
    if r.cgroup.len() > CGROUP_LEN {
        bail!("the cgroup path {} is too long to record", r.cgroup);
    }
    let mut v = Box::new(Value {
        format: FORMAT,
        cgroup_len: r.cgroup.len() as u32,
        cgroup_id: r.cgroup_id,
        sha256: r.object.sha256,
        version: [0; VERSION_LEN],
        cgroup: [0; CGROUP_LEN],
    });
    let version = r.object.version.as_bytes();
    let n = version.len().min(VERSION_LEN);
    v.version[..n].copy_from_slice(&version[..n]);
    v.cgroup[..r.cgroup.len()].copy_from_slice(r.cgroup.as_bytes());

    let mut name = [0u8; 16];
    name[..PIN.len()].copy_from_slice(PIN.as_bytes());
    let create = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: std::mem::size_of::<Value>() as u32,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: name,
    };
    let fd = bpf(BPF_MAP_CREATE, &create).context("creating the map that records the load")?;
    // SAFETY: BPF_MAP_CREATE returned a new descriptor that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let key = 0u32;
    let update = MapElem {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &*v as *const Value as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &update).context("writing the record of the load")?;
    let tmp = crate::identity::beside(path);
    let _ = std::fs::remove_file(&tmp);
    let c = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes())?;
    let pin = ObjPin {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &pin).with_context(|| format!("pinning {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The record pinned at `path`; `None` when there is none (nothing loaded,
/// or pins a toa older than the record made).
pub fn read(path: &Path) -> Result<Option<Record>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", path.display())),
        Ok(_) => {}
    }
    let info = pinned_map_info(path)?;
    if info.value_size as usize != std::mem::size_of::<Value>() {
        return Ok(None);
    }
    let fd = obj_get(path)?;
    let key = 0u32;
    let mut v: Box<Value> = Box::new(Value {
        format: 0,
        cgroup_len: 0,
        cgroup_id: 0,
        sha256: [0; 32],
        version: [0; VERSION_LEN],
        cgroup: [0; CGROUP_LEN],
    });
    let lookup = MapElem {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &mut *v as *mut Value as u64,
        flags: 0,
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &lookup)
        .with_context(|| format!("reading the record of the load at {}", path.display()))?;
    if v.format != FORMAT || v.cgroup_len as usize > CGROUP_LEN {
        return Ok(None);
    }
    let end = v
        .version
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(VERSION_LEN);
    Ok(Some(Record {
        object: Identity {
            version: String::from_utf8_lossy(&v.version[..end]).into_owned(),
            sha256: v.sha256,
        },
        cgroup: String::from_utf8_lossy(&v.cgroup[..v.cgroup_len as usize]).into_owned(),
        cgroup_id: v.cgroup_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_by_version_and_by_bytes() {
        let a = Object {
            bytes: b"one",
            version: "0.1.0",
        };
        let b = Object {
            version: "0.2.0",
            ..a
        };
        let c = Object { bytes: b"two", ..a };
        assert_eq!(a.identity(), a.identity());
        assert_ne!(a.identity(), b.identity());
        assert_ne!(a.identity(), c.identity());
        assert!(a
            .identity()
            .to_string()
            .starts_with("0.1.0 (object sha256 "));
    }
}
