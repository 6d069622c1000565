//! Reads the BTF of the compiled BPF object (its .BTF section, the type
//! information the kernel and aya load with it): as much as the layout checks
//! ask, which is struct layouts, enums and the maps of the `.maps` section.
//! The format is the kernel's (Documentation/bpf/btf.rst): a header, then
//! the types (id 1 onwards), then their names.

use object::{Object, ObjectSection};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

pub struct Btf {
    /// Index = type id; id 0 is void.
    types: Vec<Type>,
}

struct Type {
    kind: u32,
    name: String,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Struct and union members, enumerators, array (elem, nelems), datasec
    /// variables (as member types).
    members: Vec<Member>,
}

struct Member {
    name: String,
    ty: u32,
    /// Bit offset (struct), value (enum), element count (array).
    value: i64,
    bitfield: bool,
}

pub struct Field {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

pub struct Struct {
    pub size: u64,
    pub fields: Vec<Field>,
}

/// A map of the `.maps` section, as its definition gives it.
pub struct MapDef {
    pub name: String,
    pub key_size: u64,
    pub value_size: u64,
    /// 0 when the definition gives none (socket storage).
    pub max_entries: u64,
}

impl Btf {
    /// The BTF of the ELF object `elf`.
    pub fn of_object(elf: &[u8]) -> Result<Btf, String> {
        let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
        let section = file
            .section_by_name(".BTF")
            .ok_or("no .BTF section (compiled without -g?)")?;
        let data = section.data().map_err(|e| format!(".BTF: {e}"))?;
        Btf::parse(data).map_err(|e| format!(".BTF: {e}"))
    }

    fn parse(data: &[u8]) -> Result<Btf, String> {
        let little = match data.get(..2) {
            Some(m) if u16::from_le_bytes([m[0], m[1]]) == MAGIC => true,
            Some(m) if u16::from_be_bytes([m[0], m[1]]) == MAGIC => false,
            _ => return Err("bad magic".into()),
        };
        let word = |at: usize| -> Result<u32, String> {
            let b: [u8; 4] = data
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("truncated at byte {at}"))?;
            Ok(if little {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            })
        };
        let header_len = word(4)? as usize;
        if header_len < HEADER_LEN {
            return Err(format!("header of {header_len} bytes"));
        }
        let (type_off, type_len) = (word(8)? as usize, word(12)? as usize);
        let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or("strings beyond the section")?;
        let string = |off: u32| -> Result<String, String> {
            let rest = strings
                .get(off as usize..)
                .ok_or("name beyond the strings")?;
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or("unterminated name")?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        };

        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut at = header_len + type_off;
        let end = at + type_len;
        while at < end {
            let (name, info, size_or_type) = (word(at)?, word(at + 4)?, word(at + 8)?);
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            // Structs: members with bitfields; enums: signed values.
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    members.push(Member {
                        name: String::new(),
                        ty: word(at)?,
                        value: i64::from(word(at + 8)?),
                        bitfield: false,
                    });
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = word(at + 8)?;
                        members.push(Member {
                            name: string(word(at)?)?,
                            ty: word(at + 4)?,
                            // With bitfields the top byte is the field's width.
                            value: i64::from(if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            }),
                            bitfield: kind_flag && offset >> 24 != 0,
                        });
                        at += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let raw = word(at + 4)?;
                        let value = if kind_flag {
                            i64::from(raw as i32)
                        } else {
                            i64::from(raw)
                        };
                        members.push(Member {
                            name: string(word(at)?)?,
                            ty: 0,
                            value,
                            bitfield: false,
                        });
                        at += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let value = (u64::from(word(at + 8)?) << 32) | u64::from(word(at + 4)?);
                        members.push(Member {
                            name: string(word(at)?)?,
                            ty: 0,
                            value: value as i64,
                            bitfield: false,
                        });
                        at += 12;
                    }
                }
                KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC => {
                    for _ in 0..vlen {
                        members.push(Member {
                            name: String::new(),
                            ty: word(at)?,
                            value: i64::from(word(at + 4)?),
                            bitfield: false,
                        });
                        at += 12;
                    }
                }
                _ => {}
            }
            types.push(Type {
                kind,
                name: string(name)?,
                size_or_type,
                members,
            });
        }
        Ok(Btf { types })
    }

    fn get(&self, id: u32) -> Result<&Type, String> {
        self.types
            .get(id as usize)
            .ok_or_else(|| format!("type id {id} out of range"))
    }

    /// `ty` without typedefs and qualifiers.
    fn resolve(&self, mut ty: u32) -> Result<&Type, String> {
        for _ in 0..32 {
            let t = self.get(ty)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    ty = t.size_or_type
                }
                _ => return Ok(t),
            }
        }
        Err(format!("type id {ty}: typedefs nest too deep"))
    }

    fn size_of(&self, ty: u32) -> Result<u64, String> {
        let t = self.resolve(ty)?;
        Ok(match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => {
                u64::from(t.size_or_type)
            }
            KIND_PTR => 8,
            KIND_ARRAY => self.size_of(t.members[0].ty)? * t.members[0].value as u64,
            kind => return Err(format!("type {} (kind {kind}) has no size", t.name)),
        })
    }

    fn named(&self, kind: u32, name: &str) -> Option<&Type> {
        self.types.iter().find(|t| t.kind == kind && t.name == name)
    }

    /// `struct name`: its size and each field's byte offset and size.
    pub fn structure(&self, name: &str) -> Result<Struct, String> {
        let t = self
            .named(KIND_STRUCT, name)
            .ok_or_else(|| format!("no struct {name} in the object's BTF"))?;
        let mut fields = Vec::new();
        for m in &t.members {
            if m.bitfield || m.value % 8 != 0 {
                return Err(format!("struct {name}: {} is a bitfield", m.name));
            }
            fields.push(Field {
                name: m.name.clone(),
                offset: m.value as u64 / 8,
                size: self.size_of(m.ty)?,
            });
        }
        Ok(Struct {
            size: u64::from(t.size_or_type),
            fields,
        })
    }

    /// `enum name`'s enumerators and their values, in declaration order.
    pub fn enumeration(&self, name: &str) -> Result<Vec<(String, i64)>, String> {
        let t = self
            .named(KIND_ENUM, name)
            .or_else(|| self.named(KIND_ENUM64, name))
            .ok_or_else(|| format!("no enum {name} in the object's BTF"))?;
        Ok(t.members
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect())
    }

    /// The maps of the `.maps` section (libbpf's BTF-defined maps: a struct
    /// whose members point to their values: `int (*max_entries)[N]`,
    /// `T *key`).
    pub fn maps(&self) -> Result<Vec<MapDef>, String> {
        let Some(section) = self.named(KIND_DATASEC, ".maps") else {
            return Ok(Vec::new());
        };
        let mut maps = Vec::new();
        for entry in &section.members {
            let var = self.get(entry.ty)?;
            let def = self.resolve(var.size_or_type)?;
            let mut map = MapDef {
                name: var.name.clone(),
                key_size: 0,
                value_size: 0,
                max_entries: 0,
            };
            for m in &def.members {
                let pointer = self.resolve(m.ty)?;
                if pointer.kind != KIND_PTR {
                    continue;
                }
                let target = pointer.size_or_type;
                match m.name.as_str() {
                    "key" => map.key_size = self.size_of(target)?,
                    "value" => map.value_size = self.size_of(target)?,
                    "max_entries" => {
                        let array = self.resolve(target)?;
                        if array.kind == KIND_ARRAY {
                            map.max_entries = array.members[0].value as u64;
                        }
                    }
                    _ => {}
                }
            }
            maps.push(map);
        }
        Ok(maps)
    }
}
