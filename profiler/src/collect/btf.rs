//! Just enough of a BTF reader to find where a kernel keeps one struct member and
//! whether it has a function: what the register fallback of 5.10 kernels needs from
//! `/sys/kernel/btf/vmlinux` (see `profiler-ebpf/src/regs.rs`).
//!
//! The format is the kernel's `include/uapi/linux/btf.h`: a header, a type section of
//! variable-length records, a string section. Only names, kinds and struct members are
//! read; everything else is skipped by its size.

/// What can be wrong with a BTF blob.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (bad magic or truncated header)")]
    Header,
    #[error("type {0} is truncated or of unknown kind {1}")]
    Type(u32, u32),
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

/// One parsed type: its kind, name and (for structs and unions) members.
#[derive(Debug, Clone)]
struct Type<'a> {
    kind: u32,
    name: &'a str,
    /// Size in bytes of structs and unions.
    size: u32,
    kind_flag: bool,
    /// (name, type id, offset field) of struct and union members.
    members: Vec<(&'a str, u32, u32)>,
}

/// The parsed types of one BTF blob; type ids start at 1.
pub struct Btf<'a> {
    types: Vec<Type<'a>>,
}

impl<'a> Btf<'a> {
    /// Parse a little-endian BTF blob (what `/sys/kernel/btf/vmlinux` holds on x86_64).
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
        };
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Header)?;
        if magic != MAGIC {
            return Err(BtfError::Header);
        }
        let hdr_len = u32_at(4).ok_or(BtfError::Header)? as usize;
        let field = |i: usize| {
            u32_at(8 + 4 * i)
                .map(|v| v as usize)
                .ok_or(BtfError::Header)
        };
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types_at = hdr_len + type_off;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Header)?;
        let name = |off: u32| -> &'a str {
            let rest = strings.get(off as usize..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end]).unwrap_or_default()
        };
        let mut types = Vec::new();
        let mut at = types_at;
        while at < types_at + type_len {
            let id = types.len() as u32 + 1;
            let (name_off, info, size) = match (u32_at(at), u32_at(at + 4), u32_at(at + 8)) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => return Err(BtfError::Type(id, 0)),
            };
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            at += 12;
            let extra = match kind {
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                2 | 7..=12 | 16 | 18 => 0,
                // INT, VAR, DECL_TAG
                1 | 14 | 17 => 4,
                // ARRAY
                3 => 12,
                // STRUCT, UNION, DATASEC, ENUM64
                4 | 5 | 15 | 19 => 12 * vlen,
                // ENUM, FUNC_PROTO
                6 | 13 => 8 * vlen,
                other => return Err(BtfError::Type(id, other)),
            };
            let mut members = Vec::new();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for m in 0..vlen {
                    let base = at + 12 * m;
                    match (u32_at(base), u32_at(base + 4), u32_at(base + 8)) {
                        (Some(n), Some(t), Some(o)) => members.push((name(n), t, o)),
                        _ => return Err(BtfError::Type(id, kind)),
                    }
                }
            }
            at += extra;
            types.push(Type {
                kind,
                name: name(name_off),
                size,
                kind_flag: info >> 31 != 0,
                members,
            });
        }
        Ok(Self { types })
    }

    /// Byte offset of member `member` in `struct name` (the complete definition, not a
    /// forward declaration), looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && t.name == name && t.size > 0)?;
        self.find_member(id as u32 + 1, member, 0, 0)
            .map(|bits| bits / 8)
    }

    /// Bit offset of `member` inside type `id`, plus `base` bits.
    fn find_member(&self, id: u32, member: &str, base: u32, depth: u32) -> Option<u32> {
        let t = self.types.get(id.checked_sub(1)? as usize)?;
        if depth > 8 || (t.kind != KIND_STRUCT && t.kind != KIND_UNION) {
            return None;
        }
        for &(name, ty, offset) in &t.members {
            // With kind_flag the high 8 bits are a bitfield size.
            let bits = if t.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            if name == member {
                return Some(base + bits);
            }
            if name.is_empty() {
                if let Some(found) = self.find_member(ty, member, base + bits, depth + 1) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Whether a function called `name` is described (it is compiled into the kernel).
    pub fn has_function(&self, name: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.kind == KIND_FUNC && t.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A BTF blob builder for tests: types are appended in id order.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn header(&mut self, name: &str, kind: u32, vlen: u32, size: u32) {
            let n = self.string(name);
            for v in [n, (kind << 24) | vlen, size] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
        }

        /// An `int` of 8 bytes.
        fn int(&mut self, name: &str) {
            self.header(name, 1, 0, 8);
            self.types.extend_from_slice(&64u32.to_le_bytes());
        }

        /// A struct (or union) with members (name, type id, bit offset).
        fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) {
            self.header(name, kind, members.len() as u32, size);
            for &(m, ty, bits) in members {
                let n = self.string(m);
                for v in [n, ty, bits] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
        }

        fn func(&mut self, name: &str) {
            self.header(name, KIND_FUNC, 0, 0);
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let fields = [24u32, 0, self.types.len() as u32, self.types.len() as u32];
            for v in fields {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature `task_struct`: `stack` at byte 24, inside an anonymous struct at
    /// byte 16 (as `randomized_struct_fields_start` makes it), after a forward
    /// declaration of the same name; plus the function `kasan_report`.
    pub(crate) fn task_struct_blob(with_kasan: bool) -> Vec<u8> {
        let mut b = Builder::new();
        b.int("long"); // 1
        b.composite(KIND_STRUCT, "task_struct", 0, &[]); // 2: forward-like, size 0
        b.composite(KIND_STRUCT, "", 16, &[("usage", 1, 0), ("stack", 1, 64)]); // 3
        b.composite(
            KIND_STRUCT,
            "task_struct",
            64,
            &[("state", 1, 0), ("", 3, 128)],
        ); // 4
        if with_kasan {
            b.func("kasan_report");
        }
        b.build()
    }

    /// A miniature `task_struct` with `mm` at byte 8 and `mm_struct` with
    /// `start_stack` at byte 40, inside an anonymous struct at byte 32.
    pub(crate) fn mm_blob() -> Vec<u8> {
        let mut b = Builder::new();
        b.int("long"); // 1
        b.composite(
            KIND_STRUCT,
            "task_struct",
            16,
            &[("state", 1, 0), ("mm", 1, 64)],
        ); // 2
        b.composite(
            KIND_STRUCT,
            "",
            16,
            &[("brk", 1, 0), ("start_stack", 1, 64)],
        ); // 3
        b.composite(
            KIND_STRUCT,
            "mm_struct",
            48,
            &[("mmap", 1, 0), ("", 3, 256)],
        ); // 4
        b.build()
    }

    /// Check that a member inside an anonymous struct is found at its byte offset, and
    /// that the empty declaration of the same name is skipped.
    #[test]
    fn finds_member_through_anonymous_struct() {
        let blob = task_struct_blob(false);
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.member_offset("task_struct", "stack"), Some(24));
        assert_eq!(btf.member_offset("task_struct", "state"), Some(0));
        assert_eq!(btf.member_offset("task_struct", "nothing"), None);
        assert_eq!(btf.member_offset("mm_struct", "stack"), None);
        assert!(!btf.has_function("kasan_report"));
        assert!(Btf::parse(&task_struct_blob(true))
            .unwrap()
            .has_function("kasan_report"));
    }

    /// Check that bad magic and truncated types are errors, not panics.
    #[test]
    fn rejects_garbage() {
        assert_eq!(Btf::parse(b"").err(), Some(BtfError::Header));
        assert_eq!(Btf::parse(&[0u8; 32]).err(), Some(BtfError::Header));
        let mut blob = task_struct_blob(false);
        // Claim more type bytes than there are.
        blob[12..16].copy_from_slice(&10_000u32.to_le_bytes());
        assert!(Btf::parse(&blob).is_err());
    }

    /// Check the reader on this machine's own kernel BTF, when there is one.
    #[test]
    fn reads_this_kernels_task_struct() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let offset = btf.member_offset("task_struct", "stack").unwrap();
        assert!(offset > 0 && offset.is_multiple_of(8), "{offset}");
    }
}
