//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! cgtrace needs a few dozen facts from BTF at startup: member offsets of
//! kernel structs, enum values, and whether a function or BTF tracepoint
//! exists. aya parses BTF too, but its type accessors are crate-private, and
//! the one stand-alone crate (`btf-rs`) is LGPL; the format is small enough
//! (`Documentation/bpf/btf.rst`) to read here. Types are indexed once and
//! decoded on demand, so opening vmlinux BTF costs one pass and no per-type
//! allocation.

use std::path::Path;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

/// A BTF type id; 0 is `void`.
pub type TypeId = u32;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: this kernel needs CONFIG_DEBUG_INFO_BTF=y (standard on distribution kernels since 5.4)"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF data is damaged: {what} at byte {offset}")]
    Damaged { what: &'static str, offset: usize },
    #[error("BTF has no {kind} named `{name}`")]
    MissingType { kind: &'static str, name: String },
    #[error("BTF type `{type_name}` has no member `{member}`")]
    MissingMember { type_name: String, member: String },
    #[error("BTF has no enum value `{name}`")]
    MissingEnumValue { name: String },
}

/// The kinds of BTF type cgtrace asks about by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Struct,
    Union,
    Enum,
    Typedef,
    Func,
}

impl Kind {
    const fn code(self) -> u32 {
        match self {
            Self::Struct => KIND_STRUCT,
            Self::Union => KIND_UNION,
            Self::Enum => KIND_ENUM,
            Self::Typedef => KIND_TYPEDEF,
            Self::Func => KIND_FUNC,
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Struct => "struct",
            Self::Union => "union",
            Self::Enum => "enum",
            Self::Typedef => "typedef",
            Self::Func => "function",
        }
    }
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One struct or union member as BTF describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset from the start of the outermost struct asked about, in bits.
    pub bit_offset: u32,
    pub type_id: TypeId,
}

impl Member {
    /// Byte offset; `None` for a bitfield that does not start on a byte.
    #[must_use]
    pub const fn byte_offset(&self) -> Option<u32> {
        if self.bit_offset.is_multiple_of(8) {
            Some(self.bit_offset / 8)
        } else {
            None
        }
    }
}

/// Parsed BTF: the raw bytes, the offset of each type record, and a name
/// index built on first use.
pub struct Btf {
    data: Vec<u8>,
    little_endian: bool,
    types_start: usize,
    strings_start: usize,
    strings_len: usize,
    /// `type_offsets[id]` is where type `id`'s record starts (index 0
    /// unused); 32 bits, as BTF's own offsets are.
    type_offsets: Vec<u32>,
    /// Named structs, unions, enums, typedefs and functions, sorted by a
    /// hash of (kind, name) and then by id: a lookup is a binary search on
    /// the hash and a check of the names, with no copy of the names (the
    /// kernel's BTF has ~150,000 types, and a name map would hold megabytes
    /// while loading). Sorting by hash rather than by name keeps string
    /// comparisons out of the sort, which is most of what opening BTF costs.
    by_name: Vec<TypeId>,
}

impl Btf {
    /// Reads and indexes the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        Self::parse(Self::read(path)?)
    }

    /// The raw bytes of a BTF file, for whoever parses them.
    pub fn read(path: &Path) -> Result<Vec<u8>, BtfError> {
        std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// Indexes raw BTF bytes (header, type section, string section).
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic_le = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let little_endian = match magic_le {
            Some(MAGIC) => true,
            Some(m) if m.swap_bytes() == MAGIC => false,
            Some(_) => return Err(damaged("bad magic number", 0)),
            None => return Err(damaged("file shorter than the header", 0)),
        };
        let mut btf = Self {
            data,
            little_endian,
            types_start: 0,
            strings_start: 0,
            strings_len: 0,
            type_offsets: vec![0],
            by_name: Vec::new(),
        };
        // struct btf_header: magic u16, version u8, flags u8, then u32s.
        let hdr_len = btf.u32_at(4)? as usize;
        let type_off = btf.u32_at(8)? as usize;
        let type_len = btf.u32_at(12)? as usize;
        let str_off = btf.u32_at(16)? as usize;
        let str_len = btf.u32_at(20)? as usize;
        btf.types_start = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| damaged("type section offset overflows", 8))?;
        btf.strings_start = hdr_len
            .checked_add(str_off)
            .ok_or_else(|| damaged("string section offset overflows", 16))?;
        btf.strings_len = str_len;
        let types_end = btf.types_start.saturating_add(type_len);
        if types_end > btf.data.len() || btf.strings_start.saturating_add(str_len) > btf.data.len()
        {
            return Err(damaged("section extends past the end of the data", 4));
        }
        btf.index_types(types_end)?;
        btf.index_names();
        Ok(btf)
    }

    fn index_types(&mut self, end: usize) -> Result<(), BtfError> {
        let mut at = self.types_start;
        while at < end {
            self.type_offsets
                .push(u32::try_from(at).map_err(|_| damaged("type section past 4 GiB", at))?);
            let info = self.u32_at(at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind_of(info) {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => return Err(damaged("unknown type kind", at)),
            };
            at += 12 + extra;
        }
        if at != end {
            return Err(damaged("type section ends inside a type", at));
        }
        Ok(())
    }

    fn index_names(&mut self) {
        let mut named: Vec<(u64, TypeId)> = (1..self.type_offsets.len())
            .filter_map(|id| {
                let (kind, name) = self.name_key(id)?;
                Some((name_hash(kind, name), u32::try_from(id).ok()?))
            })
            .collect();
        // Among equal hashes the lowest id comes first, so the first
        // definition wins (full structs come before any duplicates a
        // module's BTF would add).
        named.sort_unstable();
        self.by_name = named.into_iter().map(|(_, id)| id).collect();
    }

    /// The hash `by_name` is sorted by, for an indexed type.
    fn indexed_hash(&self, id: TypeId) -> u64 {
        self.name_key(id as usize)
            .map_or(u64::MAX, |(kind, name)| name_hash(kind, name))
    }

    /// The (kind, name) a type is found by, for the kinds looked up by name;
    /// the name's bytes, not checked for UTF-8.
    fn name_key(&self, id: usize) -> Option<(u32, &[u8])> {
        let at = self.type_at(id)?;
        let (name_off, info) = (self.u32_at(at).ok()?, self.u32_at(at + 4).ok()?);
        let kind = kind_of(info);
        if name_off == 0
            || !matches!(
                kind,
                KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_TYPEDEF | KIND_FUNC
            )
        {
            return None;
        }
        Some((kind, self.c_str_at(name_off)?))
    }

    /// The raw BTF bytes, the index dropped.
    #[must_use]
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// Where type `id`'s record starts.
    fn type_at(&self, id: usize) -> Option<usize> {
        self.type_offsets.get(id).map(|&at| at as usize)
    }

    /// The raw BTF bytes, as read.
    #[must_use]
    pub fn raw(&self) -> &[u8] {
        &self.data
    }

    /// Number of types, `void` excluded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.type_offsets.len() - 1
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the type of `kind` named `name`.
    pub fn find(&self, kind: Kind, name: &str) -> Result<TypeId, BtfError> {
        let wanted = (kind.code(), name.as_bytes());
        let hash = name_hash(wanted.0, wanted.1);
        let first = self
            .by_name
            .partition_point(|&id| self.indexed_hash(id) < hash);
        self.by_name[first..]
            .iter()
            .take_while(|&&id| self.indexed_hash(id) == hash)
            .copied()
            .find(|&id| self.name_key(id as usize) == Some(wanted))
            .ok_or_else(|| BtfError::MissingType {
                kind: kind.label(),
                name: name.to_owned(),
            })
    }

    #[must_use]
    pub fn has(&self, kind: Kind, name: &str) -> bool {
        self.find(kind, name).is_ok()
    }

    /// Whether the kernel has the BTF tracepoint `name` (attachable as tp_btf).
    #[must_use]
    pub fn has_btf_tracepoint(&self, name: &str) -> bool {
        self.has(Kind::Typedef, &format!("btf_trace_{name}"))
    }

    /// Whether argument `index` of BTF tracepoint `name` is a pointer, from
    /// its prototype (`btf_trace_<name>`: a pointer to a function whose
    /// first parameter is the tracepoint's private data); `None` when the
    /// kernel has no such tracepoint or argument. An argument's type can
    /// change between kernels (`mark_victim` takes a pid on 5.10 and the
    /// task on the later kernels of the matrix).
    #[must_use]
    pub fn tracepoint_arg_is_pointer(&self, name: &str, index: usize) -> Option<bool> {
        let typedef = self
            .find(Kind::Typedef, &format!("btf_trace_{name}"))
            .ok()?;
        let pointer = self.strip_modifiers(typedef);
        let at = self.type_at(pointer as usize)?;
        if kind_of(self.u32_at(at + 4).ok()?) != KIND_PTR {
            return None;
        }
        let proto = self.strip_modifiers(self.u32_at(at + 8).ok()?);
        let at = self.type_at(proto as usize)?;
        let info = self.u32_at(at + 4).ok()?;
        let params = (info & 0xffff) as usize;
        if kind_of(info) != KIND_FUNC_PROTO || index + 1 >= params {
            return None;
        }
        let param_type = self.u32_at(at + 12 + 8 * (index + 1) + 4).ok()?;
        let param = self.strip_modifiers(param_type);
        let at = self.type_at(param as usize)?;
        Some(kind_of(self.u32_at(at + 4).ok()?) == KIND_PTR)
    }

    /// Resolves a dotted member path (`"css.cgroup"`) in struct or union
    /// `type_name`, looking through anonymous struct and union members the
    /// way C does. The offset is from the start of `type_name`.
    pub fn member(&self, type_name: &str, path: &str) -> Result<Member, BtfError> {
        let root = self
            .find(Kind::Struct, type_name)
            .or_else(|_| self.find(Kind::Union, type_name))?;
        let missing = || BtfError::MissingMember {
            type_name: type_name.to_owned(),
            member: path.to_owned(),
        };
        let mut current = Member {
            bit_offset: 0,
            type_id: root,
        };
        for part in path.split('.') {
            let container = self.strip_modifiers(current.type_id);
            let found = self.find_member(container, part).ok_or_else(missing)?;
            current = Member {
                bit_offset: current.bit_offset + found.bit_offset,
                type_id: found.type_id,
            };
        }
        Ok(current)
    }

    /// Byte offset of a member path; fails for bitfields.
    pub fn offset_of(&self, type_name: &str, path: &str) -> Result<u32, BtfError> {
        let member = self.member(type_name, path)?;
        member.byte_offset().ok_or_else(|| BtfError::MissingMember {
            type_name: type_name.to_owned(),
            member: format!("{path} (a bitfield, not byte-addressable)"),
        })
    }

    fn find_member(&self, container: TypeId, name: &str) -> Option<Member> {
        let at = self.type_at(container as usize)?;
        let info = self.u32_at(at + 4).ok()?;
        if !matches!(kind_of(info), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let bitfield_encoding = info >> 31 == 1;
        for index in 0..(info & 0xffff) as usize {
            let m = at + 12 + 12 * index;
            let name_off = self.u32_at(m).ok()?;
            let type_id = self.u32_at(m + 4).ok()?;
            let raw_offset = self.u32_at(m + 8).ok()?;
            let bit_offset = if bitfield_encoding {
                raw_offset & 0x00ff_ffff
            } else {
                raw_offset
            };
            if name_off == 0 {
                // Anonymous struct or union: its members belong to us.
                if let Some(inner) = self.find_member(self.strip_modifiers(type_id), name) {
                    return Some(Member {
                        bit_offset: bit_offset + inner.bit_offset,
                        type_id: inner.type_id,
                    });
                }
            } else if self.str_at(name_off) == Some(name) {
                return Some(Member {
                    bit_offset,
                    type_id,
                });
            }
        }
        None
    }

    /// Skips typedefs and qualifiers to the underlying type.
    #[must_use]
    pub fn strip_modifiers(&self, mut id: TypeId) -> TypeId {
        for _ in 0..32 {
            let Some(at) = self.type_at(id as usize) else {
                return id;
            };
            let Ok(info) = self.u32_at(at + 4) else {
                return id;
            };
            match kind_of(info) {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    match self.u32_at(at + 8) {
                        Ok(next) => id = next,
                        Err(_) => return id,
                    }
                }
                _ => return id,
            }
        }
        id
    }

    /// Size in bytes of a type (through typedefs, arrays and qualifiers).
    #[must_use]
    pub fn size_of(&self, id: TypeId) -> Option<u64> {
        let id = self.strip_modifiers(id);
        let at = self.type_at(id as usize)?;
        let info = self.u32_at(at + 4).ok()?;
        match kind_of(info) {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(u64::from(self.u32_at(at + 8).ok()?))
            }
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let element = self.u32_at(at + 12).ok()?;
                let count = self.u32_at(at + 20).ok()?;
                Some(self.size_of(element)? * u64::from(count))
            }
            _ => None,
        }
    }

    /// For an array type: `(element type, element count)`.
    #[must_use]
    pub fn array_of(&self, id: TypeId) -> Option<(TypeId, u32)> {
        let id = self.strip_modifiers(id);
        let at = self.type_at(id as usize)?;
        if kind_of(self.u32_at(at + 4).ok()?) != KIND_ARRAY {
            return None;
        }
        Some((self.u32_at(at + 12).ok()?, self.u32_at(at + 20).ok()?))
    }

    /// The name of a struct, union, enum or typedef type (`None` if anonymous).
    #[must_use]
    pub fn name_of(&self, id: TypeId) -> Option<&str> {
        let at = self.type_at(id as usize)?;
        let name_off = self.u32_at(at).ok()?;
        if name_off == 0 {
            return None;
        }
        self.str_at(name_off)
    }

    /// The value of enumerator `name`, searched in every enum (many kernel
    /// enums, such as the one holding `MM_FILEPAGES`, are anonymous).
    pub fn enum_value(&self, name: &str) -> Result<i64, BtfError> {
        for id in 1..self.type_offsets.len() {
            let at = self.type_offsets[id] as usize;
            let Ok(info) = self.u32_at(at + 4) else {
                continue;
            };
            let kind = kind_of(info);
            let stride = match kind {
                KIND_ENUM => 8,
                KIND_ENUM64 => 12,
                _ => continue,
            };
            for index in 0..(info & 0xffff) as usize {
                let v = at + 12 + stride * index;
                let Ok(name_off) = self.u32_at(v) else {
                    break;
                };
                if self.str_at(name_off) != Some(name) {
                    continue;
                }
                let low = self.u32_at(v + 4)?;
                return Ok(if kind == KIND_ENUM {
                    let signed = info >> 31 == 1;
                    if signed {
                        i64::from(low.cast_signed())
                    } else {
                        i64::from(low)
                    }
                } else {
                    let high = self.u32_at(v + 8)?;
                    ((u64::from(high) << 32) | u64::from(low)).cast_signed()
                });
            }
        }
        Err(BtfError::MissingEnumValue {
            name: name.to_owned(),
        })
    }

    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        let bytes: [u8; 4] = self
            .data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| damaged("read past the end", at))?;
        Ok(if self.little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }

    /// The NUL-terminated string at `name_off` of the string section.
    fn c_str_at(&self, name_off: u32) -> Option<&[u8]> {
        let name_off = name_off as usize;
        if name_off >= self.strings_len {
            return None;
        }
        let start = self.strings_start + name_off;
        let end = self.strings_start + self.strings_len;
        let bytes = self.data.get(start..end)?;
        let len = bytes.iter().position(|&b| b == 0)?;
        Some(&bytes[..len])
    }

    fn str_at(&self, name_off: u32) -> Option<&str> {
        std::str::from_utf8(self.c_str_at(name_off)?).ok()
    }
}

/// FNV-1a over a type's kind and name: cheap, and spread well enough that
/// names sharing a hash are rare (they are told apart by name).
fn name_hash(kind: u32, name: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in kind.to_le_bytes().iter().chain(name) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const fn kind_of(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

const fn damaged(what: &'static str, offset: usize) -> BtfError {
    BtfError::Damaged { what, offset }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! Builds small BTF blobs in memory for tests.

    use super::{KIND_ARRAY, KIND_ENUM, KIND_INT, KIND_PTR, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION};

    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn header(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
            let name = self.name(name);
            self.types.extend_from_slice(&name.to_le_bytes());
            self.types
                .extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            self.types.extend_from_slice(&size_or_type.to_le_bytes());
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.header(name, KIND_INT, 0, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }

        /// A function (`KIND_FUNC`) with no prototype detail.
        pub fn func(&mut self, name: &str) -> u32 {
            self.header(name, super::KIND_FUNC, 0, 0)
        }

        pub fn ptr(&mut self, to: u32) -> u32 {
            self.header("", KIND_PTR, 0, to)
        }

        pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.header(name, KIND_TYPEDEF, 0, to)
        }

        /// A function prototype with unnamed parameters of these types.
        pub fn func_proto(&mut self, returns: u32, params: &[u32]) -> u32 {
            let vlen = u32::try_from(params.len()).unwrap();
            let id = self.header("", super::KIND_FUNC_PROTO, vlen, returns);
            for param in params {
                self.types.extend_from_slice(&0u32.to_le_bytes());
                self.types.extend_from_slice(&param.to_le_bytes());
            }
            id
        }

        pub fn array(&mut self, element: u32, count: u32, index_type: u32) -> u32 {
            let id = self.header("", KIND_ARRAY, 0, 0);
            for v in [element, index_type, count] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            id
        }

        /// Members as `(name, type, byte offset)`; an empty name is anonymous.
        pub fn structure(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(KIND_STRUCT, name, size, members)
        }

        pub fn union(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(KIND_UNION, name, size, members)
        }

        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let vlen = u32::try_from(members.len()).unwrap();
            let id = self.header(name, kind, vlen, size);
            for (member, ty, offset) in members {
                let n = self.name(member);
                for v in [n, *ty, offset * 8] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }

        pub fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let vlen = u32::try_from(values.len()).unwrap();
            let id = self.header(name, KIND_ENUM, vlen, 4);
            for (value_name, value) in values {
                let n = self.name(value_name);
                self.types.extend_from_slice(&n.to_le_bytes());
                self.types.extend_from_slice(&value.to_le_bytes());
            }
            id
        }

        pub fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            let type_len = u32::try_from(self.types.len()).unwrap();
            let str_len = u32::try_from(self.strings.len()).unwrap();
            out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            for v in [24, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&u32::to_le_bytes(v));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Btf, BtfError, Kind, fixture::Builder};

    fn sample() -> Btf {
        let mut b = Builder::new();
        let long = b.int("long", 8);
        let int = b.int("int", 4);
        let counter = b.structure("page_counter", 16, &[("usage", long, 0), ("max", long, 8)]);
        let css = b.structure(
            "cgroup_subsys_state",
            16,
            &[("cgroup", long, 0), ("parent", long, 8)],
        );
        let inner = b.structure("", 8, &[("oom_group", int, 0), ("swappiness", int, 4)]);
        let anon_union = b.union("", 16, &[("swap", counter, 0), ("memsw", counter, 0)]);
        b.structure(
            "mem_cgroup",
            64,
            &[
                ("css", css, 0),
                ("memory", counter, 16),
                ("", anon_union, 32),
                ("", inner, 48),
            ],
        );
        let ptr = b.ptr(css);
        let array = b.array(ptr, 14, int);
        b.structure("css_set", 112, &[("subsys", array, 0)]);
        b.enumeration(
            "cgroup_subsys_id",
            &[("cpu_cgrp_id", 1), ("memory_cgrp_id", 4)],
        );
        b.enumeration("", &[("MM_FILEPAGES", 0), ("MM_ANONPAGES", 1)]);
        b.typedef("btf_trace_mark_victim", ptr);
        Btf::parse(b.build()).unwrap()
    }

    #[test]
    fn a_tracepoints_argument_types_come_from_its_prototype() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let task = b.structure("task_struct", 8, &[("pid", int, 0)]);
        let task_ptr = b.ptr(task);
        let data = b.ptr(0);
        // Later kernels: mark_victim(struct task_struct *task, uid_t uid).
        let new_proto = b.func_proto(0, &[data, task_ptr, int]);
        let new_ptr = b.ptr(new_proto);
        b.typedef("btf_trace_mark_victim", new_ptr);
        // 5.10: mark_victim(int pid).
        let old_proto = b.func_proto(0, &[data, int]);
        let old_ptr = b.ptr(old_proto);
        b.typedef("btf_trace_old_victim", old_ptr);
        let btf = Btf::parse(b.build()).unwrap();
        assert_eq!(btf.tracepoint_arg_is_pointer("mark_victim", 0), Some(true));
        assert_eq!(btf.tracepoint_arg_is_pointer("mark_victim", 1), Some(false));
        assert_eq!(btf.tracepoint_arg_is_pointer("mark_victim", 2), None);
        assert_eq!(btf.tracepoint_arg_is_pointer("old_victim", 0), Some(false));
        assert_eq!(btf.tracepoint_arg_is_pointer("nope", 0), None);
    }

    #[test]
    fn finds_nested_and_anonymous_members() {
        let btf = sample();
        assert_eq!(btf.offset_of("mem_cgroup", "memory.max").unwrap(), 24);
        assert_eq!(btf.offset_of("mem_cgroup", "css.parent").unwrap(), 8);
        assert_eq!(btf.offset_of("mem_cgroup", "memsw").unwrap(), 32);
        assert_eq!(btf.offset_of("mem_cgroup", "memsw.usage").unwrap(), 32);
        assert_eq!(btf.offset_of("mem_cgroup", "oom_group").unwrap(), 48);
        assert_eq!(btf.offset_of("mem_cgroup", "swappiness").unwrap(), 52);
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = sample();
        let err = btf.offset_of("mem_cgroup", "memory.nope").unwrap_err();
        assert!(matches!(err, BtfError::MissingMember { .. }), "{err}");
        assert!(err.to_string().contains("memory.nope"));
        let err = btf.offset_of("no_such_struct", "x").unwrap_err();
        assert!(err.to_string().contains("no_such_struct"), "{err}");
    }

    #[test]
    fn reads_arrays_enums_and_tracepoints() {
        let btf = sample();
        let subsys = btf.member("css_set", "subsys").unwrap();
        let (element, count) = btf.array_of(subsys.type_id).unwrap();
        assert_eq!(count, 14);
        assert_eq!(btf.size_of(element), Some(8));
        assert_eq!(btf.size_of(subsys.type_id), Some(112));
        assert_eq!(btf.enum_value("memory_cgrp_id").unwrap(), 4);
        assert_eq!(btf.enum_value("MM_ANONPAGES").unwrap(), 1);
        assert!(btf.enum_value("MM_NOPE").is_err());
        assert!(btf.has_btf_tracepoint("mark_victim"));
        assert!(!btf.has_btf_tracepoint("sched_switch"));
        assert!(btf.has(Kind::Struct, "css_set"));
    }

    #[test]
    fn rejects_damaged_data_without_panicking() {
        let good = Builder::new().build();
        assert!(Btf::parse(good.clone()).is_ok());
        assert!(matches!(
            Btf::parse(vec![1, 2, 3, 4]),
            Err(BtfError::Damaged { .. })
        ));
        assert!(Btf::parse(Vec::new()).is_err());
        let full = {
            let mut b = Builder::new();
            let int = b.int("int", 4);
            b.structure("s", 4, &[("a", int, 0)]);
            b.build()
        };
        for cut in 0..full.len() {
            let _ = Btf::parse(full[..cut].to_vec());
        }
        for flip in 0..full.len() {
            let mut bytes = full.clone();
            bytes[flip] ^= 0xff;
            if let Ok(btf) = Btf::parse(bytes) {
                let _ = btf.offset_of("s", "a");
                let _ = btf.enum_value("x");
            }
        }
    }

    #[test]
    fn reads_the_running_kernel_when_it_has_btf() {
        let Ok(btf) = Btf::from_sys_fs() else {
            crate::note!("skipped: no /sys/kernel/btf/vmlinux on this kernel");
            return;
        };
        assert!(btf.len() > 10_000);
        assert!(btf.offset_of("mem_cgroup", "memory").is_ok());
        assert!(btf.has_btf_tracepoint("mark_victim"));
    }
}
