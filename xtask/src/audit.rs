//! Audit of the Rust kernel object, run on every build before kbuild sees it.
//!
//! A module loader applies only the relocations it knows (3.10: NONE, 64, PC32,
//! 32, 32S) and resolves only symbols the kernel exports, and a panic in the
//! kernel has nowhere to unwind to. The object must therefore hold no panic
//! path, no undefined symbol beyond an explicit allow-list, and no other
//! relocation type. `R_X86_64_PLT32` means the same as PC32 for a symbol
//! defined in the module or the kernel, so [`rewrite_plt32`] turns it into PC32
//! first, as newer kernels' loaders do themselves.

use anyhow::{bail, Context, Result};
use object::elf;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The object to audit (e.g. toa-kmod/kbuild/rust/toa_core-x86_64-plain.o).
    pub object: PathBuf,
    /// A symbol the kernel provides that the object may reference (repeatable).
    #[arg(long = "allow-undefined")]
    pub allow_undefined: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let allowed: Vec<&str> = args.allow_undefined.iter().map(String::as_str).collect();
    audit_file(&args.object, &allowed)?;
    println!("{}: ok", args.object.display());
    Ok(())
}

/// Relocation types the oldest supported loader (Linux 3.10, x86_64) applies.
const ALLOWED_RELOCATIONS: &[(u32, &str)] = &[
    (elf::R_X86_64_NONE, "R_X86_64_NONE"),
    (elf::R_X86_64_64, "R_X86_64_64"),
    (elf::R_X86_64_PC32, "R_X86_64_PC32"),
    (elf::R_X86_64_32, "R_X86_64_32"),
    (elf::R_X86_64_32S, "R_X86_64_32S"),
];

/// Symbol name fragments that only appear when a panic or unwind path survived.
const PANIC_MARKERS: &[&str] = &[
    "panic",
    "rust_begin_unwind",
    "rust_eh_personality",
    "_Unwind_",
];

pub fn audit_file(path: &Path, allowed_undefined: &[&str]) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    audit(&bytes, allowed_undefined).with_context(|| format!("audit of {} failed", path.display()))
}

/// Every problem found, one per line, or Ok.
pub fn audit(bytes: &[u8], allowed_undefined: &[&str]) -> Result<()> {
    let file = object::File::parse(bytes).context("not an object file")?;
    let mut problems = Vec::new();
    if file.architecture() != object::Architecture::X86_64
        || file.kind() != object::ObjectKind::Relocatable
    {
        problems.push(format!(
            "expected an x86_64 relocatable object, found {:?} {:?}",
            file.architecture(),
            file.kind()
        ));
    }
    for symbol in file.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        if let Some(marker) = PANIC_MARKERS.iter().find(|m| name.contains(*m)) {
            problems.push(format!(
                "panic path survived: symbol `{name}` (matches `{marker}`)"
            ));
        }
        if symbol.is_undefined() && !allowed_undefined.contains(&name) {
            problems.push(format!(
                "undefined symbol `{name}`: the object must be self-contained"
            ));
        }
    }
    for section in file.sections() {
        let section_name = section.name().unwrap_or("?");
        if matches!(section_name, ".got" | ".got.plt" | ".plt")
            || section_name.starts_with(".tdata")
            || section_name.starts_with(".tbss")
        {
            problems.push(format!(
                "section `{section_name}` cannot be loaded into a kernel module"
            ));
        }
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::Elf { r_type } = reloc.flags() else {
                continue;
            };
            if !ALLOWED_RELOCATIONS.iter().any(|(t, _)| *t == r_type) {
                problems.push(format!(
                    "relocation type {} ({}) at {section_name}+{offset:#x}: old module loaders reject it",
                    r_type,
                    relocation_name(r_type)
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

fn relocation_name(r_type: u32) -> &'static str {
    match r_type {
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
        elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
        elf::R_X86_64_PC64 => "R_X86_64_PC64",
        elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32",
        _ => ALLOWED_RELOCATIONS
            .iter()
            .find(|(t, _)| *t == r_type)
            .map_or("unknown", |(_, n)| n),
    }
}

/// Rewrites every `R_X86_64_PLT32` into `R_X86_64_PC32` in place; returns how many.
pub fn rewrite_plt32(bytes: &mut [u8]) -> Result<usize> {
    let endian = object::Endianness::Little;
    let header =
        elf::FileHeader64::<object::Endianness>::parse(&*bytes).context("not an ELF64 object")?;
    if header.endian().context("ELF endianness")? != endian {
        bail!("expected a little-endian object");
    }
    let sections = header
        .sections(endian, &*bytes)
        .context("ELF section table")?;
    let mut rela_ranges = Vec::new();
    for section in sections.iter() {
        if section.sh_type(endian) == elf::SHT_RELA {
            let start = usize::try_from(section.sh_offset(endian))?;
            let size = usize::try_from(section.sh_size(endian))?;
            rela_ranges.push(
                start
                    ..start
                        .checked_add(size)
                        .context("RELA section size overflows")?,
            );
        }
    }
    const RELA_SIZE: usize = std::mem::size_of::<elf::Rela64<object::Endianness>>();
    let mut rewritten = 0;
    for range in rela_ranges {
        let rela = bytes
            .get_mut(range.clone())
            .context("RELA section outside the file")?;
        for entry in rela.chunks_exact_mut(RELA_SIZE) {
            // r_offset (8), r_info (8: symbol << 32 | type), r_addend (8).
            let info = &mut entry[8..16];
            let r_type = u32::from_le_bytes(info[..4].try_into().expect("4 bytes"));
            if r_type == elf::R_X86_64_PLT32 {
                info[..4].copy_from_slice(&elf::R_X86_64_PC32.to_le_bytes());
                rewritten += 1;
            }
        }
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, Relocation, StandardSection, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};

    /// A relocatable x86_64 object with one function `f` calling `callee`
    /// through a relocation of type `r_type`.
    fn object_with(callee: &str, define_callee: bool, r_type: u32) -> Vec<u8> {
        let mut obj = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        // call rel32; ret
        let code = [0xe8, 0, 0, 0, 0, 0xc3];
        let offset = obj.append_section_data(text, &code, 16);
        obj.add_symbol(Symbol {
            name: b"f".to_vec(),
            value: offset,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        let callee_section = if define_callee {
            let o = obj.append_section_data(text, &[0xc3], 16);
            let _ = o;
            SymbolSection::Section(text)
        } else {
            SymbolSection::Undefined
        };
        let callee_id = obj.add_symbol(Symbol {
            name: callee.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: callee_section,
            flags: SymbolFlags::None,
        });
        obj.add_relocation(
            text,
            Relocation {
                offset: offset + 1,
                symbol: callee_id,
                addend: -4,
                flags: RelocationFlags::Elf { r_type },
            },
        )
        .unwrap();
        obj.write().unwrap()
    }

    #[test]
    fn good_object_passes() {
        let bytes = object_with("helper", true, elf::R_X86_64_PC32);
        audit(&bytes, &[]).unwrap();
    }

    #[test]
    fn panic_symbol_fails() {
        let bytes = object_with("_ZN4core9panicking5panic17h0E", false, elf::R_X86_64_PC32);
        let err = audit(&bytes, &[]).unwrap_err().to_string();
        assert!(err.contains("panic path survived"), "{err}");
    }

    #[test]
    fn undefined_symbol_fails_unless_allowed() {
        let bytes = object_with("memcpy", false, elf::R_X86_64_PC32);
        let err = audit(&bytes, &[]).unwrap_err().to_string();
        assert!(err.contains("undefined symbol `memcpy`"), "{err}");
        audit(&bytes, &["memcpy"]).unwrap();
    }

    #[test]
    fn plt32_fails_until_rewritten() {
        let mut bytes = object_with("__x86_return_thunk", false, elf::R_X86_64_PLT32);
        let err = audit(&bytes, &["__x86_return_thunk"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("R_X86_64_PLT32"), "{err}");
        assert_eq!(rewrite_plt32(&mut bytes).unwrap(), 1);
        audit(&bytes, &["__x86_return_thunk"]).unwrap();
        assert_eq!(rewrite_plt32(&mut bytes).unwrap(), 0);
    }

    #[test]
    fn gotpcrel_fails() {
        let bytes = object_with("helper", true, elf::R_X86_64_GOTPCREL);
        let err = audit(&bytes, &[]).unwrap_err().to_string();
        assert!(err.contains("R_X86_64_GOTPCREL"), "{err}");
    }

    #[test]
    fn garbage_is_not_an_object() {
        let err = audit(b"not an elf file at all", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an object file"), "{err}");
    }
}
