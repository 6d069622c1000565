//! Audit of the Rust kernel object, run on every build before kbuild sees it.
//!
//! A module loader applies only the relocations it knows (3.10: NONE, 64, PC32,
//! 32, 32S) and resolves only symbols the kernel exports, and a panic in the
//! kernel has nowhere to unwind to. The object must therefore hold no panic
//! path, no undefined symbol beyond an explicit allow-list, and no other
//! relocation type. `R_X86_64_PLT32` means the same as PC32 for a symbol
//! defined in the module or the kernel, so [`rewrite_plt32`] turns it into PC32
//! first, as newer kernels' loaders do themselves.
//!
//! aarch64 objects are held to the arm64 loader's list (no GOT relocations:
//! it refuses `R_AARCH64_ADR_GOT_PAGE`), and their code must not touch the
//! FP/SIMD registers, which the kernel does not save for its own code.

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

/// Relocation types the arm64 module loader applies (`apply_relocate_add`,
/// the same set from 3.10 to 7.x).
const ALLOWED_AARCH64_RELOCATIONS: &[(u32, &str)] = &[
    (elf::R_AARCH64_NONE, "R_AARCH64_NONE"),
    (elf::R_AARCH64_ABS64, "R_AARCH64_ABS64"),
    (elf::R_AARCH64_ABS32, "R_AARCH64_ABS32"),
    (elf::R_AARCH64_ABS16, "R_AARCH64_ABS16"),
    (elf::R_AARCH64_PREL64, "R_AARCH64_PREL64"),
    (elf::R_AARCH64_PREL32, "R_AARCH64_PREL32"),
    (elf::R_AARCH64_PREL16, "R_AARCH64_PREL16"),
    (elf::R_AARCH64_LD_PREL_LO19, "R_AARCH64_LD_PREL_LO19"),
    (elf::R_AARCH64_ADR_PREL_LO21, "R_AARCH64_ADR_PREL_LO21"),
    (
        elf::R_AARCH64_ADR_PREL_PG_HI21,
        "R_AARCH64_ADR_PREL_PG_HI21",
    ),
    (
        elf::R_AARCH64_ADR_PREL_PG_HI21_NC,
        "R_AARCH64_ADR_PREL_PG_HI21_NC",
    ),
    (elf::R_AARCH64_ADD_ABS_LO12_NC, "R_AARCH64_ADD_ABS_LO12_NC"),
    (
        elf::R_AARCH64_LDST8_ABS_LO12_NC,
        "R_AARCH64_LDST8_ABS_LO12_NC",
    ),
    (
        elf::R_AARCH64_LDST16_ABS_LO12_NC,
        "R_AARCH64_LDST16_ABS_LO12_NC",
    ),
    (
        elf::R_AARCH64_LDST32_ABS_LO12_NC,
        "R_AARCH64_LDST32_ABS_LO12_NC",
    ),
    (
        elf::R_AARCH64_LDST64_ABS_LO12_NC,
        "R_AARCH64_LDST64_ABS_LO12_NC",
    ),
    (
        elf::R_AARCH64_LDST128_ABS_LO12_NC,
        "R_AARCH64_LDST128_ABS_LO12_NC",
    ),
    (elf::R_AARCH64_TSTBR14, "R_AARCH64_TSTBR14"),
    (elf::R_AARCH64_CONDBR19, "R_AARCH64_CONDBR19"),
    (elf::R_AARCH64_JUMP26, "R_AARCH64_JUMP26"),
    (elf::R_AARCH64_CALL26, "R_AARCH64_CALL26"),
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
    let allowed_relocations = match file.architecture() {
        object::Architecture::Aarch64 => ALLOWED_AARCH64_RELOCATIONS,
        _ => ALLOWED_RELOCATIONS,
    };
    if !matches!(
        file.architecture(),
        object::Architecture::X86_64 | object::Architecture::Aarch64
    ) || file.kind() != object::ObjectKind::Relocatable
    {
        problems.push(format!(
            "expected an x86_64 or aarch64 relocatable object, found {:?} {:?}",
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
            if !allowed_relocations.iter().any(|(t, _)| *t == r_type) {
                let name = if file.architecture() == object::Architecture::Aarch64 {
                    aarch64_relocation_name(r_type)
                } else {
                    relocation_name(r_type)
                };
                problems.push(format!(
                    "relocation type {r_type} ({name}) at {section_name}+{offset:#x}: old module loaders reject it"
                ));
            }
        }
        if file.architecture() == object::Architecture::Aarch64
            && section.kind() == object::SectionKind::Text
        {
            if let Some(at) = first_fp_simd(section.data().unwrap_or_default()) {
                problems.push(format!(
                    "FP/SIMD instruction at {section_name}+{at:#x}: kernel code may use general registers only"
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

fn aarch64_relocation_name(r_type: u32) -> &'static str {
    match r_type {
        elf::R_AARCH64_ADR_GOT_PAGE => "R_AARCH64_ADR_GOT_PAGE",
        elf::R_AARCH64_LD64_GOT_LO12_NC => "R_AARCH64_LD64_GOT_LO12_NC",
        elf::R_AARCH64_TLSLE_ADD_TPREL_HI12 => "R_AARCH64_TLSLE_ADD_TPREL_HI12",
        _ => ALLOWED_AARCH64_RELOCATIONS
            .iter()
            .find(|(t, _)| *t == r_type)
            .map_or("unknown", |(_, n)| n),
    }
}

/// Offset of the first A64 instruction that uses FP/SIMD registers: the
/// "data processing, scalar FP and Advanced SIMD" class (op0 = x111) and the
/// SIMD&FP loads and stores (op0 = x1x0 with V, bit 26, set).
fn first_fp_simd(code: &[u8]) -> Option<usize> {
    code.chunks_exact(4)
        .position(|w| {
            let insn = u32::from_le_bytes(w.try_into().expect("4 bytes"));
            let op0 = (insn >> 25) & 0xf;
            let fp_data = op0 & 0b0111 == 0b0111;
            let fp_load_store = op0 & 0b0101 == 0b0100 && insn & (1 << 26) != 0;
            fp_data || fp_load_store
        })
        .map(|i| i * 4)
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

    /// A relocatable aarch64 object: `f` is `code`, with one relocation of
    /// type `r_type` against a defined `helper` at offset 0.
    fn aarch64_object(code: &[u8], r_type: u32) -> Vec<u8> {
        let mut obj = WObject::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        let offset = obj.append_section_data(text, code, 16);
        let helper = obj.add_symbol(Symbol {
            name: b"helper".to_vec(),
            value: offset,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        obj.add_relocation(
            text,
            Relocation {
                offset,
                symbol: helper,
                addend: 0,
                flags: RelocationFlags::Elf { r_type },
            },
        )
        .unwrap();
        obj.write().unwrap()
    }

    /// `bl helper; ret`
    const A64_CALL_RET: [u8; 8] = [0x00, 0x00, 0x00, 0x94, 0xc0, 0x03, 0x5f, 0xd6];

    #[test]
    fn aarch64_object_with_a_call_passes() {
        audit(&aarch64_object(&A64_CALL_RET, elf::R_AARCH64_CALL26), &[]).unwrap();
    }

    #[test]
    fn aarch64_got_relocation_fails() {
        let bytes = aarch64_object(&A64_CALL_RET, elf::R_AARCH64_ADR_GOT_PAGE);
        let err = audit(&bytes, &[]).unwrap_err().to_string();
        assert!(err.contains("R_AARCH64_ADR_GOT_PAGE"), "{err}");
    }

    #[test]
    fn aarch64_fp_simd_fails() {
        // fmov d0, x1 (FP data processing), then str q0, [sp] (SIMD&FP store).
        for insn in [[0x20, 0x00, 0x67, 0x9e], [0xe0, 0x03, 0x80, 0x3d]] {
            let mut code = A64_CALL_RET.to_vec();
            code.splice(4..4, insn);
            let bytes = aarch64_object(&code, elf::R_AARCH64_CALL26);
            let err = audit(&bytes, &[]).unwrap_err().to_string();
            assert!(err.contains("FP/SIMD instruction at .text+0x4"), "{err}");
        }
        // Integer loads, stores and arithmetic are not FP: ldr x0, [sp]; str w1, [x0]; add x0, x0, #1.
        for insn in [
            [0xe0, 0x03, 0x40, 0xf9],
            [0x01, 0x00, 0x00, 0xb9],
            [0x00, 0x04, 0x00, 0x91],
        ] {
            assert_eq!(first_fp_simd(&insn), None, "{insn:x?}");
        }
    }

    #[test]
    fn garbage_is_not_an_object() {
        let err = audit(b"not an elf file at all", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an object file"), "{err}");
    }
}
