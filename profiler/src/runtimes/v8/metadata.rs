//! V8's post-mortem metadata: the `v8dbg_*` symbols node binaries carry.
//!
//! V8's build script `gen-postmortem-metadata.py` emits one `int v8dbg_<name> = <value>`
//! per constant: object field offsets (`class_<Class>__<field>__<type>`), instance
//! types (`type_<Class>__<TYPE>`), frame-pointer offsets (`off_fp_*`) and tagging
//! constants. They are read once per node binary ([`Symbols::from_elf`]) and turned into
//! the [`Layout`] the heap walk uses. Field type suffixes change between versions
//! (`__Object`, `__Tagged_Object_`, `__Tagged_NameOrScopeInfoT_`), so fields are matched
//! on class and field name only; fields some versions lack fall back to the value every
//! supported version has (V8 11 to 13: Node 20 to 24).
//!
//! [`Symbols`] keeps every pair, so other readers of the V8 heap (a census of
//! suspended async functions, say) can ask for the classes they need.
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use object::{Object, ObjectSegment, ObjectSymbol};

/// Why a binary's V8 metadata cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot parse the binary: {0}")]
    Elf(#[from] object::Error),
    #[error(
        "no V8 post-mortem metadata (v8dbg_* symbols): a node built without it, or stripped \
         of .symtab and .dynsym; JS frames stay unnamed unless node runs with --perf-basic-prof"
    )]
    Absent,
    #[error("V8 metadata lacks {0}, needed to name JS frames")]
    Missing(String),
}

/// The `v8dbg_*` name/value pairs of one binary, names without the prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols(BTreeMap<String, i64>);

const PREFIX: &str = "v8dbg_";

impl Symbols {
    /// Read the pairs from an ELF image: symbols of `.symtab` and `.dynsym` whose name
    /// starts with `v8dbg_`, each an `int` in a loaded segment.
    pub fn from_elf(data: &[u8]) -> Result<Self, MetadataError> {
        let file = object::File::parse(data)?;
        let segments: Vec<(u64, &[u8])> = file
            .segments()
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        let value_at = |addr: u64| -> Option<i64> {
            segments.iter().find_map(|&(start, bytes)| {
                let off = usize::try_from(addr.checked_sub(start)?).ok()?;
                let b = bytes.get(off..off + 4)?;
                Some(i64::from(i32::from_le_bytes(b.try_into().ok()?)))
            })
        };
        let mut out = BTreeMap::new();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            let Some(name) = sym.name().ok().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            // A zero-initialised int lives in .bss, past the segment's file bytes.
            let value = value_at(sym.address()).unwrap_or(0);
            out.entry(name.to_string()).or_insert(value);
        }
        if out.is_empty() {
            return Err(MetadataError::Absent);
        }
        Ok(Self(out))
    }

    /// Parse `name value` lines (with or without the `v8dbg_` prefix), as
    /// `tests/data/v8/*.symbols` hold them; other lines are skipped.
    pub fn parse_text(text: &str) -> Self {
        let pairs = text.lines().filter_map(|line| {
            let (name, value) = line.trim().split_once(' ')?;
            let name = name.strip_prefix(PREFIX).unwrap_or(name);
            Some((name.to_string(), value.trim().parse().ok()?))
        });
        Self(pairs.collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A constant by its full name (`SmiShiftSize`, `off_fp_function`).
    pub fn get(&self, name: &str) -> Option<i64> {
        self.0.get(name).copied()
    }

    /// The offset of `field` in `class`, whatever the type suffix.
    pub fn field(&self, class: &str, field: &str) -> Option<i64> {
        self.first_with_prefix(&format!("class_{class}__{field}__"))
    }

    /// The instance type of `class` (the first `type_<class>__*` constant).
    pub fn instance_type(&self, class: &str) -> Option<u16> {
        self.first_with_prefix(&format!("type_{class}__"))
            .and_then(|v| u16::try_from(v).ok())
    }

    fn first_with_prefix(&self, prefix: &str) -> Option<i64> {
        self.0
            .range(prefix.to_string()..)
            .next()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, &v)| v)
    }
}

/// Tagging of V8 values on x86-64 without pointer compression (as node builds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagging {
    pub heap_object_tag: u64,
    pub heap_object_tag_mask: u64,
    pub smi_tag: u64,
    pub smi_tag_mask: u64,
    /// Bits a small integer is shifted by (`SmiShiftSize` + the one tag bit).
    pub smi_shift: u32,
}

impl Tagging {
    pub fn is_heap_object(&self, v: u64) -> bool {
        v & self.heap_object_tag_mask == self.heap_object_tag
    }

    pub fn untag(&self, v: u64) -> u64 {
        v & !self.heap_object_tag_mask
    }

    pub fn smi(&self, v: u64) -> Option<i64> {
        (v & self.smi_tag_mask == self.smi_tag).then(|| (v as i64) >> self.smi_shift)
    }
}

/// Instance types and field offsets of the string classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringLayout {
    /// Instance types below this are strings.
    pub first_nonstring_type: u16,
    pub representation_mask: u16,
    pub encoding_mask: u16,
    pub seq_tag: u16,
    pub cons_tag: u16,
    pub thin_tag: u16,
    pub one_byte_tag: u16,
    pub length: u64,
    pub seq_chars: u64,
    pub cons_first: u64,
    pub cons_second: u64,
    pub thin_actual: u64,
}

/// Everything the frame namer reads, from one binary's [`Symbols`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub tagging: Tagging,
    /// Offsets from a JS frame's frame pointer.
    pub fp_function: i64,
    pub fp_context: i64,
    /// An interpreted frame's BytecodeArray, which tells its function apart where the
    /// code address (the interpreter's) does not.
    pub fp_bytecode_array: i64,
    pub map: u64,
    pub map_instance_type: u64,
    pub map_type: u16,
    pub js_function_types: RangeInclusive<u16>,
    pub js_function_shared: u64,
    pub sfi_type: u16,
    pub sfi_name_or_scope_info: u64,
    pub sfi_script: u64,
    pub scope_info_type: u16,
    /// Slot index (after the map) of the first variable entry, and of the count of
    /// context locals.
    pub scope_info_first_vars: u64,
    pub scope_info_context_locals: u64,
    pub script_type: u16,
    pub script_name: u64,
    pub script_line_ends: u64,
    pub script_source: u64,
    pub fixed_array_type: u16,
    pub fixed_array_length: u64,
    pub fixed_array_data: u64,
    pub strings: StringLayout,
}

/// How many instance types V8 11 to 13 give JS functions (`JS_FUNCTION_TYPE` is the first
/// of them; V8 11 does not export `FirstJSFunctionType`/`LastJSFunctionType`).
const JS_FUNCTION_TYPES: u16 = 16;

impl Layout {
    pub fn from_symbols(s: &Symbols) -> Result<Self, MetadataError> {
        if s.is_empty() {
            return Err(MetadataError::Absent);
        }
        let need =
            |v: Option<i64>, what: &str| v.ok_or_else(|| MetadataError::Missing(what.into()));
        let off = |class: &str, fields: &[&str]| -> Result<u64, MetadataError> {
            fields
                .iter()
                .find_map(|f| s.field(class, f))
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| MetadataError::Missing(format!("{class}::{}", fields[0])))
        };
        let konst = |name: &str| need(s.get(name), name);
        let small = |name: &str| -> Result<u16, MetadataError> {
            u16::try_from(konst(name)?).map_err(|_| MetadataError::Missing(name.into()))
        };
        let ty = |class: &str| {
            need(
                s.instance_type(class).map(i64::from),
                &format!("type_{class}"),
            )
            .map(|v| v as u16)
        };
        let js_function = ty("JSFunction")?;
        let first = s
            .get("FirstJSFunctionType")
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(js_function);
        let last = s
            .get("LastJSFunctionType")
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(first + JS_FUNCTION_TYPES);
        let seq_chars = off("SeqOneByteString", &["chars"])?;
        Ok(Self {
            tagging: Tagging {
                heap_object_tag: konst("HeapObjectTag")? as u64,
                heap_object_tag_mask: konst("HeapObjectTagMask")? as u64,
                smi_tag: s.get("SmiTag").unwrap_or(0) as u64,
                smi_tag_mask: s.get("SmiTagMask").unwrap_or(1) as u64,
                smi_shift: u32::try_from(konst("SmiShiftSize")? + 1)
                    .map_err(|_| MetadataError::Missing("SmiShiftSize".into()))?,
            },
            fp_function: konst("off_fp_function")?,
            fp_context: konst("off_fp_context")?,
            fp_bytecode_array: konst("off_fp_bytecode_array")?,
            map: off("HeapObject", &["map"])?,
            map_instance_type: off("Map", &["instance_type"])?,
            map_type: ty("Map")?,
            js_function_types: first..=last,
            js_function_shared: off("JSFunction", &["shared"])?,
            sfi_type: ty("SharedFunctionInfo")?,
            sfi_name_or_scope_info: off("SharedFunctionInfo", &["name_or_scope_info"])?,
            sfi_script: off("SharedFunctionInfo", &["script_or_debug_info", "script"])?,
            scope_info_type: ty("ScopeInfo")?,
            scope_info_first_vars: konst("scopeinfo_idx_first_vars")? as u64,
            scope_info_context_locals: konst("scopeinfo_idx_ncontextlocals")? as u64,
            script_type: ty("Script")?,
            script_name: off("Script", &["name"])?,
            script_line_ends: off("Script", &["line_ends"])?,
            script_source: off("Script", &["source"])?,
            fixed_array_type: ty("FixedArray")?,
            fixed_array_length: off("FixedArrayBase", &["length"])?,
            fixed_array_data: off("FixedArray", &["data"]).unwrap_or(16),
            strings: StringLayout {
                first_nonstring_type: small("FirstNonstringType")?,
                representation_mask: small("StringRepresentationMask")?,
                encoding_mask: small("StringEncodingMask")?,
                seq_tag: small("SeqStringTag")?,
                cons_tag: small("ConsStringTag")?,
                thin_tag: small("ThinStringTag")?,
                one_byte_tag: small("OneByteStringTag")?,
                length: off("String", &["length"])?,
                seq_chars,
                cons_first: off("ConsString", &["first"])?,
                cons_second: off("ConsString", &["second"])?,
                thin_actual: off("ThinString", &["actual"])?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Symbols {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/v8")
            .join(name);
        Symbols::parse_text(&std::fs::read_to_string(path).unwrap())
    }

    /// Check that Node 20's metadata (Debian, glibc) gives the layout, with the
    /// fallbacks for the constants V8 11 does not export.
    #[test]
    fn node20_layout() {
        let s = fixture("node20.symbols");
        assert_eq!(s.len(), 531);
        let l = Layout::from_symbols(&s).unwrap();
        assert_eq!(l.fp_function, -16);
        assert_eq!(l.js_function_shared, 24);
        assert_eq!(l.js_function_types, 2066..=2082);
        assert_eq!(l.sfi_name_or_scope_info, 16);
        // `script_or_debug_info__HeapObject` in V8 11.
        assert_eq!(l.sfi_script, 32);
        assert_eq!(l.tagging.smi_shift, 32);
        assert_eq!((l.tagging.smi_tag, l.tagging.smi_tag_mask), (0, 1));
        assert_eq!(l.script_line_ends, 56);
        assert_eq!(l.scope_info_first_vars, 3);
    }

    /// Check Node 24's metadata (the musl wheel): new type suffixes, `script` renamed,
    /// and the exported JS function type range.
    #[test]
    fn node24_layout() {
        let s = fixture("node24.symbols");
        let l = Layout::from_symbols(&s).unwrap();
        // `name_or_scope_info__Tagged_NameOrScopeInfoT_`, `script__Tagged_HeapObject_`.
        assert_eq!(l.sfi_name_or_scope_info, 24);
        assert_eq!(l.sfi_script, 40);
        assert_eq!(l.js_function_shared, 32);
        assert_eq!(l.js_function_types, 2065..=2081);
        assert_eq!(l.sfi_type, 282);
        assert_eq!(l.scope_info_first_vars, 5);
    }

    /// Check that class and field are matched whole: `SharedFunctionInfo` is not
    /// `SharedFunctionInfoWrapper`, and `name` is not `name_or_scope_info`.
    #[test]
    fn fields_match_whole_names() {
        let s = Symbols::parse_text(
            "v8dbg_class_SharedFunctionInfoWrapper__shared_info__Tagged_X_ 8\n\
             v8dbg_class_SharedFunctionInfo__name_or_scope_info__Object 16\n",
        );
        assert_eq!(s.field("SharedFunctionInfo", "shared_info"), None);
        assert_eq!(s.field("SharedFunctionInfo", "name"), None);
        assert_eq!(
            s.field("SharedFunctionInfo", "name_or_scope_info"),
            Some(16)
        );
    }

    /// Check that a binary without metadata, and metadata without a needed field, give
    /// errors that say so.
    #[test]
    fn missing_metadata_is_explained() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert!(matches!(
            Symbols::from_elf(&own),
            Err(MetadataError::Absent)
        ));
        let mut text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v8/node20.symbols"),
        )
        .unwrap();
        text = text
            .lines()
            .filter(|l| !l.contains("off_fp_function"))
            .collect::<Vec<_>>()
            .join("\n");
        let e = Layout::from_symbols(&Symbols::parse_text(&text)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "V8 metadata lacks off_fp_function, needed to name JS frames"
        );
    }

    /// Check the ELF reader on Debian's node, when installed: the same pairs as the
    /// committed fixture, which was extracted from it.
    #[test]
    fn reads_debian_node_when_installed() {
        let Ok(data) = std::fs::read("/usr/bin/node") else {
            eprintln!("skipped: /usr/bin/node is not installed");
            return;
        };
        let s = Symbols::from_elf(&data).unwrap();
        if s.get("off_fp_function").is_none() {
            eprintln!("skipped: /usr/bin/node has no V8 metadata");
            return;
        }
        assert!(Layout::from_symbols(&s).is_ok());
        let fx = fixture("node20.symbols");
        if s.len() == fx.len() {
            assert_eq!(s, fx);
        }
    }
}
