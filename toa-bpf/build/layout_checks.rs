//! Writes the layout checks: one const assertion for each thing the loader
//! shares with bpf/toa.bpf.c, the C side's value read from the object's BTF
//! (btf.rs). src/layout_checks.rs includes them, so a Rust mirror that
//! differs fails the build with a message naming the struct field, counter,
//! flag or map. New fields, counters and flags in C are checked without a
//! change here; a new map stops the build until a line below says how the
//! loader reads it.

use std::fmt::Write;

use crate::btf::Btf;

/// How the loader mirrors a C struct.
enum Mirror {
    /// A `#[repr(C)]` struct with the C field names.
    Fields(&'static str),
    /// The data of aya's LPM trie key (`Key<data>`: the kernel's `__u32`
    /// prefix length, then the data).
    LpmKeyData(&'static str),
}

/// The C structs the loader mirrors. `struct client` has no mirror: only
/// the programs read socket storage.
const STRUCTS: &[(&str, Mirror)] = &[
    ("settings", Mirror::Fields("crate::maps::SettingsValue")),
    ("trusted_v4", Mirror::LpmKeyData("crate::maps::TrustedV4")),
    ("trusted_v6", Mirror::LpmKeyData("crate::maps::TrustedV6")),
];

/// A map as the loader uses it: the types it reads key and value with, and
/// how many entries it indexes, as Rust expressions (`None`: nothing to
/// check).
struct Map {
    name: &'static str,
    key: Option<&'static str>,
    value: Option<&'static str>,
    entries: Option<&'static str>,
}

const MAPS: &[Map] = &[
    Map {
        name: "toa_settings",
        key: Some("u32"),
        value: Some("crate::maps::SettingsValue"),
        // Entry 0 alone is written and read.
        entries: None,
    },
    Map {
        name: "toa_trusted_v4",
        key: Some("aya::maps::lpm_trie::Key<crate::maps::TrustedV4>"),
        value: Some("u8"),
        entries: None,
    },
    Map {
        name: "toa_trusted_v6",
        key: Some("aya::maps::lpm_trie::Key<crate::maps::TrustedV6>"),
        value: Some("u8"),
        entries: None,
    },
    Map {
        name: "toa_counters",
        key: Some("u32"),
        value: Some("u64"),
        entries: Some("crate::counters::COUNTERS.len()"),
    },
    Map {
        name: "toa_clients",
        key: None,
        value: None,
        entries: None,
    },
];

/// `enum counter`, without its last enumerator (the count), names the
/// counters in order: their Rust names are the C names in lower case.
const COUNTER_ENUM: &str = "counter";
const COUNTER_NAMES: &str = "crate::counters::COUNTERS";
const COUNTER_COUNT: &str = "NR_COUNTERS";

/// `enum settings_flag`: each flag is a Rust constant of the same name here.
const FLAG_ENUM: &str = "settings_flag";
const FLAG_MODULE: &str = "crate::maps";

const SOURCE: &str = "bpf/toa.bpf.c";

/// The checks for the object `elf`, as Rust source.
pub fn generate(elf: &[u8]) -> Result<String, String> {
    let btf = Btf::of_object(elf)?;
    let mut out = String::from(
        "// Written by build.rs (build/layout_checks.rs) from the BTF of the compiled\n\
         // bpf/toa.bpf.c: what the C side says, asserted of the Rust side.\n",
    );
    for (name, mirror) in STRUCTS {
        structure(&mut out, &btf, name, mirror)?;
    }
    counters(&mut out, &btf)?;
    flags(&mut out, &btf)?;
    maps(&mut out, &btf)?;
    Ok(out)
}

/// One assertion: `message` when `condition` is false.
fn check(out: &mut String, condition: &str, message: &str) {
    let _ = writeln!(
        out,
        "const _: () = assert!({condition}, {:?});",
        format!("{SOURCE}: {message}")
    );
}

fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

fn structure(out: &mut String, btf: &Btf, name: &str, mirror: &Mirror) -> Result<(), String> {
    let c = btf.structure(name)?;
    match mirror {
        Mirror::Fields(rust) => {
            check(
                out,
                &format!("core::mem::size_of::<{rust}>() == {}", c.size),
                &format!("struct {name} is {}; {rust} is not", bytes(c.size)),
            );
            for f in &c.fields {
                check(
                    out,
                    &format!(
                        "core::mem::offset_of!({rust}, {field}) == {offset} \
                         && field_size(|s: &{rust}| &s.{field}) == {size}",
                        field = f.name,
                        offset = f.offset,
                        size = f.size
                    ),
                    &format!(
                        "struct {name}'s field {} is {} at offset {}; {rust}'s is not",
                        f.name,
                        bytes(f.size),
                        f.offset
                    ),
                );
            }
        }
        Mirror::LpmKeyData(rust) => {
            let [prefix, data] = &c.fields[..] else {
                return Err(format!(
                    "struct {name}, an LPM trie key, has {} fields, not a prefix length and \
                     the data",
                    c.fields.len()
                ));
            };
            if prefix.offset != 0 || prefix.size != 4 || data.offset != 4 {
                return Err(format!(
                    "struct {name}, an LPM trie key, must start with a __u32 prefix length, \
                     the data right after it"
                ));
            }
            check(
                out,
                &format!("core::mem::size_of::<{rust}>() == {}", data.size),
                &format!(
                    "struct {name}'s field {} is {}; {rust} is not",
                    data.name,
                    bytes(data.size)
                ),
            );
        }
    }
    Ok(())
}

/// clang gives an enum BTF only as the type of a variable.
fn enumeration(btf: &Btf, name: &str) -> Result<Vec<(String, i64)>, String> {
    btf.enumeration(name)
        .map_err(|e| format!("{e} (struct shared_enums must have a field of its type)"))
}

fn counters(out: &mut String, btf: &Btf) -> Result<(), String> {
    let mut values = enumeration(btf, COUNTER_ENUM)?;
    match values.pop() {
        Some((last, n)) if last == COUNTER_COUNT && n == values.len() as i64 => {}
        _ => {
            return Err(format!(
                "enum {COUNTER_ENUM} must number its counters from 0 and end with \
                 {COUNTER_COUNT}, their count"
            ))
        }
    }
    for (i, (name, value)) in values.iter().enumerate() {
        if *value != i as i64 {
            return Err(format!(
                "enum {COUNTER_ENUM}: {name} = {value}; counters are numbered from 0, in order"
            ));
        }
    }
    let n = values.len();
    check(
        out,
        &format!("{COUNTER_NAMES}.len() == {n}"),
        &format!("enum {COUNTER_ENUM} has {n} counters; {COUNTER_NAMES} has not"),
    );
    for (i, (name, _)) in values.iter().enumerate() {
        let rust = name.to_lowercase();
        check(
            out,
            &format!("named_at(&{COUNTER_NAMES}, {i}, {rust:?})"),
            &format!(
                "enum {COUNTER_ENUM}'s {name} = {i}, so {COUNTER_NAMES}[{i}] must be {rust:?}"
            ),
        );
    }
    Ok(())
}

fn flags(out: &mut String, btf: &Btf) -> Result<(), String> {
    for (name, value) in enumeration(btf, FLAG_ENUM)? {
        check(
            out,
            &format!("{FLAG_MODULE}::{name} as i64 == {value}"),
            &format!("enum {FLAG_ENUM}'s {name} = {value:#x}; {FLAG_MODULE}::{name} is not"),
        );
    }
    Ok(())
}

fn maps(out: &mut String, btf: &Btf) -> Result<(), String> {
    let c_maps = btf.maps()?;
    if let Some(m) = MAPS
        .iter()
        .find(|m| !c_maps.iter().any(|c| c.name == m.name))
    {
        return Err(format!(
            "the loader uses the map {}, which {SOURCE} does not define",
            m.name
        ));
    }
    let n = c_maps.len();
    check(
        out,
        &format!("crate::maps::ALL.len() == {n}"),
        &format!("{n} maps are defined; crate::maps::ALL does not list {n}"),
    );
    for c in &c_maps {
        let Some(m) = MAPS.iter().find(|m| m.name == c.name) else {
            return Err(format!(
                "the map {} is new: say in build/layout_checks.rs (MAPS) how the loader reads \
                 it, and add it to crate::maps::ALL",
                c.name
            ));
        };
        let name = &c.name;
        check(
            out,
            &format!("listed(&crate::maps::ALL, {name:?})"),
            &format!("the map {name} is not in crate::maps::ALL"),
        );
        if let Some(key) = m.key {
            check(
                out,
                &format!("core::mem::size_of::<{key}>() == {}", c.key_size),
                &format!(
                    "the map {name}'s key is {}; {key} is not",
                    bytes(c.key_size)
                ),
            );
        }
        if let Some(value) = m.value {
            check(
                out,
                &format!("core::mem::size_of::<{value}>() == {}", c.value_size),
                &format!(
                    "the map {name}'s value is {}; {value} is not",
                    bytes(c.value_size)
                ),
            );
        }
        if let Some(entries) = m.entries {
            check(
                out,
                &format!("{entries} == {}", c.max_entries),
                &format!(
                    "the map {name} has max_entries {}; the loader reads {entries}",
                    c.max_entries
                ),
            );
        }
    }
    Ok(())
}
