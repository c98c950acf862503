//! A node binary's V8 support, read once per file and shared by every process that
//! maps it: the [`Layout`] from its `v8dbg_*` symbols and where its embedded builtins
//! (the interpreter and baseline entry code) lie.
use std::ops::Range;
use std::path::Path;

use object::{Object, ObjectSegment, ObjectSymbol};

use super::metadata::{Layout, MetadataError, Symbols};

/// What the frame namer needs from one node binary.
#[derive(Debug)]
pub struct V8Binary {
    pub symbols: Symbols,
    pub layout: Layout,
    /// The embedded builtins' code, as offsets in the file: frames there are interpreted
    /// or baseline JS frames (or stubs, which the namer tells apart). File offsets, since
    /// V8 may map the blob a second time near its JIT code.
    pub builtins: Option<Range<u64>>,
}

/// Whether a mapped file may be a node binary (checked by content in [`V8Binary::load`]).
pub fn looks_like_node(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("node") || base.starts_with("libnode")
}

impl V8Binary {
    /// Read `path`'s V8 metadata.
    pub fn load(path: &Path) -> Result<Self, MetadataError> {
        let data = std::fs::read(path)
            .map_err(|e| MetadataError::Missing(format!("a readable binary ({e})")))?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, MetadataError> {
        let symbols = Symbols::from_elf(data)?;
        let layout = Layout::from_symbols(&symbols)?;
        Ok(Self {
            symbols,
            layout,
            builtins: builtins_range(data),
        })
    }
}

/// The embedded blob's code as file offsets: `v8_Default_embedded_blob_code_` and its
/// size, else the span of the `Builtins_*` symbols.
fn builtins_range(data: &[u8]) -> Option<Range<u64>> {
    let file = object::File::parse(data).ok()?;
    let mut blob = None;
    let mut size_at = None;
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        match sym.name() {
            Ok("v8_Default_embedded_blob_code_") => blob = Some(sym.address()),
            Ok("v8_Default_embedded_blob_code_size_") => size_at = Some(sym.address()),
            Ok(n) if n.starts_with("Builtins_") && sym.address() != 0 => {
                lo = lo.min(sym.address());
                hi = hi.max(sym.address() + sym.size().max(1));
            }
            _ => {}
        }
    }
    let size = size_at.and_then(|at| {
        file.segments().find_map(|s| {
            let off = usize::try_from(at.checked_sub(s.address())?).ok()?;
            let b = s.data().ok()?.get(off..off + 4)?;
            Some(u64::from(u32::from_le_bytes(b.try_into().ok()?)))
        })
    });
    let range = match (blob, size) {
        (Some(start), Some(size)) if size > 0 => start..start + size,
        _ if lo < hi => lo..hi,
        _ => return None,
    };
    let to_offset = |addr: u64| {
        file.segments().find_map(|s| {
            let (off, len) = s.file_range();
            let delta = addr.checked_sub(s.address())?;
            (delta <= len).then_some(off + delta)
        })
    };
    Some(to_offset(range.start)?..to_offset(range.end)?)
}
