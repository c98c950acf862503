//! The parts of an ELF file that unwinding needs: load segments (for the load bias),
//! the build ID (the cache key) and the CFI sections.
//!
//! Files are read through [`object::ReadCache`], so only the headers and the few
//! sections we keep are read: never a whole (possibly multi-hundred-MB) library.
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use framehop::ExplicitModuleSectionInfo;
use object::elf::{FileHeader64, NT_GNU_BUILD_ID, PF_X, PT_LOAD, SHF_COMPRESSED};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable};
use object::{LittleEndian, ReadCache};

use super::MappedModule;
use crate::safe_file::{self, FileKind, SafeFileError};

/// Why an ELF file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// Not opened: missing, not a regular file, or over the size cap.
    #[error(transparent)]
    Open(#[from] SafeFileError),
    #[error("corrupt ELF {path}: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: object::read::Error,
    },
    #[error("unsupported ELF {path}: {reason}")]
    Unsupported { path: String, reason: &'static str },
}

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub exec: bool,
}

/// What an [`AddressSpace`](super::AddressSpace) needs to know about a mapped file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfHeaders {
    pub loads: Vec<LoadSegment>,
    pub build_id: Option<Vec<u8>>,
}

/// Page size the kernel maps file segments with (x86_64).
const PAGE_SIZE: u64 = 4096;

/// Load bias (`avma = svma + bias`) implied by a mapping of `map_offset` at `map_start`.
///
/// The kernel maps each `PT_LOAD` from its page-aligned file offset, so the segment
/// whose (page-aligned) file range holds `map_offset` tells which vaddr the mapping
/// stands for. Segments can share a page in non-`-z separate-code` layouts; an
/// executable mapping then prefers the executable segment, which is the one whose
/// code we will look up.
pub fn load_bias(
    loads: &[LoadSegment],
    map_start: u64,
    map_offset: u64,
    exec: bool,
) -> Option<u64> {
    let holds = |s: &&LoadSegment| {
        let aligned = s.offset & !(PAGE_SIZE - 1);
        aligned <= map_offset && map_offset < s.offset.saturating_add(s.filesz.max(1))
    };
    let seg = loads
        .iter()
        .filter(holds)
        .find(|s| s.exec == exec)
        .or_else(|| loads.iter().find(holds))?;
    // avma of file offset X is map_start + (X - map_offset); for X = seg.offset that
    // is bias + seg.vaddr. Wrapping: a non-PIE binary has bias 0 and the subtraction
    // order may underflow transiently.
    Some(
        map_start
            .wrapping_add(seg.offset)
            .wrapping_sub(map_offset)
            .wrapping_sub(seg.vaddr),
    )
}

/// Read program headers and the GNU build ID of `open` (named `path` in errors).
pub fn read_headers(path: &str, open: &Path) -> Result<ElfHeaders, ElfError> {
    let file = safe_file::open(open, FileKind::Elf)?;
    let data = ReadCache::new(file);
    let corrupt = |source| ElfError::Corrupt {
        path: path.to_string(),
        source,
    };
    let header = parse_header(path, &data)?;
    let endian = LittleEndian;
    let mut headers = ElfHeaders::default();
    for ph in header.program_headers(endian, &data).map_err(corrupt)? {
        if ph.p_type(endian) == PT_LOAD {
            headers.loads.push(LoadSegment {
                vaddr: ph.p_vaddr(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
                exec: ph.p_flags(endian).0 & PF_X.0 != 0,
            });
        }
        // A bad note segment only costs us the build ID (and with it cache sharing).
        if let Ok(Some(mut notes)) = ph.notes(endian, &data) {
            while let Ok(Some(note)) = notes.next() {
                if note.n_type(endian) == NT_GNU_BUILD_ID && note.name() == b"GNU" {
                    headers.build_id = Some(note.desc().to_vec());
                }
            }
        }
    }
    Ok(headers)
}

/// Parse the file header, accepting only 64-bit little-endian x86_64 files: the only
/// kind of code this profiler unwinds.
fn parse_header<'a>(
    path: &str,
    data: &'a ReadCache<File>,
) -> Result<&'a FileHeader64<LittleEndian>, ElfError> {
    let header = FileHeader64::<LittleEndian>::parse(data).map_err(|source| ElfError::Corrupt {
        path: path.to_string(),
        source,
    })?;
    let unsupported = |reason| ElfError::Unsupported {
        path: path.to_string(),
        reason,
    };
    if !header.is_little_endian() {
        return Err(unsupported("big-endian"));
    }
    if header.e_machine(LittleEndian) != object::elf::EM_X86_64 {
        return Err(unsupported("not x86_64"));
    }
    Ok(header)
}

/// CFI sections of one file, shared (via `Arc`) by every process that maps it.
#[derive(Clone, Debug, Default)]
pub struct UnwindSections {
    text_svma: Option<Range<u64>>,
    got_svma: Option<Range<u64>>,
    eh_frame: Option<(Range<u64>, Arc<[u8]>)>,
    eh_frame_hdr: Option<(Range<u64>, Arc<[u8]>)>,
    debug_frame: Option<Arc<[u8]>>,
    /// Code ranges (SVMAs) that `.eh_frame` has an FDE for, sorted and merged.
    fde_ranges: Vec<Range<u64>>,
}

impl UnwindSections {
    /// Section info for `framehop::Module::new`; SVMAs are relative to a zero base,
    /// which is what makes the module's `base_avma` the load bias.
    ///
    /// `text` bytes are not passed: framehop only reads them for mach-O instruction
    /// analysis, and they would be the biggest thing we keep.
    pub fn section_info(&self) -> ExplicitModuleSectionInfo<Arc<[u8]>> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text_svma.clone(),
            got_svma: self.got_svma.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(r, _)| r.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, d)| d.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, d)| d.clone()),
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        }
    }

    /// Whether this file's CFI covers code address `svma`. Without `.eh_frame`, a
    /// `.debug_frame` is assumed to cover everything (it is not indexed here).
    pub fn covers(&self, svma: u64) -> bool {
        if self.eh_frame.is_none() {
            return self.debug_frame.is_some();
        }
        let i = self.fde_ranges.partition_point(|r| r.start <= svma);
        i > 0 && self.fde_ranges[i - 1].contains(&svma)
    }
}

/// Read the CFI sections of `open` (named `path` in errors).
pub fn read_unwind_sections(path: &str, open: &Path) -> Result<UnwindSections, ElfError> {
    let file = safe_file::open(open, FileKind::Elf)?;
    let data = ReadCache::new(file);
    let endian = LittleEndian;
    let corrupt = |source| ElfError::Corrupt {
        path: path.to_string(),
        source,
    };
    let header = parse_header(path, &data)?;
    let sections = header.sections(endian, &data).map_err(corrupt)?;
    let svma = |name: &[u8]| {
        let (_, sh) = sections.section_by_name(endian, name)?;
        let start = sh.sh_addr(endian);
        Some(start..start.checked_add(sh.sh_size(endian))?)
    };
    let bytes = |name: &[u8]| -> Result<Option<Arc<[u8]>>, ElfError> {
        section_bytes(&sections, &data, name).map_err(corrupt)
    };
    let mut out = UnwindSections {
        text_svma: svma(b".text"),
        got_svma: svma(b".got"),
        ..Default::default()
    };
    if let (Some(range), Some(data)) = (svma(b".eh_frame"), bytes(b".eh_frame")?) {
        out.fde_ranges = fde_ranges(&data, range.start);
        out.eh_frame = Some((range, data));
        // framehop trusts the header's search table when there is a header; without a
        // table it would find no FDE at all, so only a usable header is passed on and
        // otherwise framehop indexes .eh_frame itself.
        if let (Some(range), Some(hdr)) = (svma(b".eh_frame_hdr"), bytes(b".eh_frame_hdr")?) {
            if eh_frame_hdr_has_table(&hdr) {
                out.eh_frame_hdr = Some((range, hdr));
            }
        }
    } else {
        // framehop only reads .debug_frame when there is no .eh_frame.
        out.debug_frame = bytes(b".debug_frame")?;
    }
    Ok(out)
}

/// Bytes of a section, or `None` if absent, empty or compressed (we build `object`
/// without decompression; compressed CFI only occurs in `.debug_frame`).
fn section_bytes<'a>(
    sections: &SectionTable<'a, FileHeader64<LittleEndian>, &'a ReadCache<File>>,
    data: &'a ReadCache<File>,
    name: &[u8],
) -> Result<Option<Arc<[u8]>>, object::read::Error> {
    let endian = LittleEndian;
    let Some((_, sh)) = sections.section_by_name(endian, name) else {
        return Ok(None);
    };
    if sh.sh_flags(endian).0 & SHF_COMPRESSED.0 != 0 {
        return Ok(None);
    }
    let bytes = sh.data(endian, data)?;
    Ok((!bytes.is_empty()).then(|| Arc::from(bytes)))
}

/// Whether `.eh_frame_hdr` carries the binary search table (version 1, FDE count and
/// table encodings not `DW_EH_PE_omit`).
fn eh_frame_hdr_has_table(hdr: &[u8]) -> bool {
    const DW_EH_PE_OMIT: u8 = 0xff;
    hdr.len() >= 4 && hdr[0] == 1 && hdr[2] != DW_EH_PE_OMIT && hdr[3] != DW_EH_PE_OMIT
}

/// Code ranges of the FDEs in `.eh_frame` (`data`, loaded at `svma`), sorted and
/// merged. Parsing stops at the first malformed entry; FDEs whose pointer encoding we
/// do not handle (neither absolute nor pc-relative) are left out.
fn fde_ranges(data: &[u8], svma: u64) -> Vec<Range<u64>> {
    let mut encodings = HashMap::new();
    let mut ranges = Vec::new();
    let mut pos = 0;
    while let Some(entry) = CfiEntry::at(data, pos) {
        pos = entry.end;
        if entry.id == 0 {
            continue;
        }
        // An FDE: its id is the distance back from the id field to its CIE.
        let Some(cie) = entry.body.checked_sub(entry.id) else {
            break;
        };
        let encoding = *encodings
            .entry(cie)
            .or_insert_with(|| cie_fde_encoding(data, cie));
        let Some(encoding) = encoding else { continue };
        let mut at = entry.body + entry.offset_size;
        let field_svma = svma + at as u64;
        let (Some(begin), Some(len)) = (
            read_encoded(data, &mut at, encoding, field_svma),
            read_encoded(data, &mut at, encoding & 0x0f, 0),
        ) else {
            continue;
        };
        if len > 0 {
            ranges.push(begin..begin.saturating_add(len));
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// One CIE or FDE of `.eh_frame`.
struct CfiEntry {
    /// Offset of the id field (the CIE pointer of an FDE).
    body: usize,
    id: usize,
    /// 4, or 8 in the 64-bit format.
    offset_size: usize,
    end: usize,
}

impl CfiEntry {
    /// The entry at `pos`, or `None` at the terminator, the end or a malformed length.
    fn at(data: &[u8], pos: usize) -> Option<Self> {
        let mut length = u64::from(u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?));
        let mut body = pos + 4;
        let mut offset_size = 4;
        if length == 0xffff_ffff {
            length = u64::from_le_bytes(data.get(body..body + 8)?.try_into().ok()?);
            body += 8;
            offset_size = 8;
        }
        let end = body.checked_add(usize::try_from(length).ok()?)?;
        if length == 0 || end > data.len() {
            return None;
        }
        let id_bytes = data.get(body..body + offset_size)?;
        let id = if offset_size == 4 {
            u64::from(u32::from_le_bytes(id_bytes.try_into().ok()?))
        } else {
            u64::from_le_bytes(id_bytes.try_into().ok()?)
        };
        Some(CfiEntry {
            body,
            id: usize::try_from(id).ok()?,
            offset_size,
            end,
        })
    }
}

/// The FDE pointer encoding (augmentation `R`) of the CIE at `pos`; absolute if absent.
fn cie_fde_encoding(data: &[u8], pos: usize) -> Option<u8> {
    let entry = CfiEntry::at(data, pos)?;
    let mut at = entry.body + entry.offset_size;
    let version = *data.get(at)?;
    at += 1;
    let aug_len = data.get(at..entry.end)?.iter().position(|&b| b == 0)?;
    let aug = &data[at..at + aug_len];
    at += aug_len + 1;
    if aug.starts_with(b"eh") {
        at += 8;
    }
    read_uleb(data, &mut at)?; // code alignment
    read_uleb(data, &mut at)?; // data alignment (sleb; only skipped)
    if version == 1 {
        at += 1;
    } else {
        read_uleb(data, &mut at)?;
    }
    let Some(rest) = aug.strip_prefix(b"z") else {
        return Some(0);
    };
    read_uleb(data, &mut at)?;
    for c in rest {
        match c {
            b'R' => return data.get(at).copied(),
            b'L' => at += 1,
            b'P' => {
                let enc = *data.get(at)?;
                at += 1;
                read_encoded(data, &mut at, enc & 0x0f, 0)?;
            }
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    Some(0)
}

fn read_uleb(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Read a `DW_EH_PE_*`-encoded pointer; pc-relative values are relative to `field_svma`.
fn read_encoded(data: &[u8], at: &mut usize, encoding: u8, field_svma: u64) -> Option<u64> {
    let mut fixed = |n: usize| {
        let bytes = data.get(*at..*at + n)?;
        *at += n;
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(bytes);
        Some(u64::from_le_bytes(buf))
    };
    let sign = |v: u64, bits: u32| ((v << (64 - bits)) as i64 >> (64 - bits)) as u64;
    let value = match encoding & 0x0f {
        0x00 | 0x04 | 0x0c => fixed(8)?,
        0x01 => read_uleb(data, at)?,
        0x02 => fixed(2)?,
        0x03 => fixed(4)?,
        0x0a => sign(fixed(2)?, 16),
        0x0b => sign(fixed(4)?, 32),
        _ => return None,
    };
    match encoding & 0x70 {
        0x00 => Some(value),
        0x10 => Some(field_svma.wrapping_add(value)),
        _ => None,
    }
}

/// Identity of a file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    BuildId(Vec<u8>),
    Stat {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
    },
}

impl FileKey {
    fn of(module: &MappedModule) -> Option<Self> {
        if let Some(id) = &module.build_id {
            return Some(Self::BuildId(id.clone()));
        }
        let meta = std::fs::metadata(&module.open_path).ok()?;
        Some(Self::Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// Parsed unwind sections per file, shared across processes and maps refreshes.
///
/// Keyed by build ID, or by device+inode+size+mtime for files without one, so that
/// libc is read once even though every process reaches it through its own
/// `/proc/PID/root/...` path.
#[derive(Debug, Default)]
pub struct ElfCache {
    entries: HashMap<FileKey, Arc<UnwindSections>>,
}

impl ElfCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwind sections of `module`'s file, read on first use.
    ///
    /// A corrupt file is remembered as having no CFI, so its error is returned once
    /// per cache lifetime rather than on every refresh. I/O errors are not remembered:
    /// they belong to one process's path (it may have exited), not to the file.
    pub(crate) fn sections(
        &mut self,
        module: &MappedModule,
    ) -> Result<Arc<UnwindSections>, ElfError> {
        let key = FileKey::of(module);
        if let Some(hit) = key.as_ref().and_then(|k| self.entries.get(k)) {
            return Ok(hit.clone());
        }
        let result = read_unwind_sections(&module.path, &module.open_path);
        let (entry, result) = match result {
            Ok(sections) => {
                let sections = Arc::new(sections);
                (Some(sections.clone()), Ok(sections))
            }
            // Missing or unreadable now may be readable later: not cached. A FIFO, a
            // device or an oversized file stays what it is: cached as empty.
            Err(e @ ElfError::Open(SafeFileError::Open { .. } | SafeFileError::Read { .. })) => {
                (None, Err(e))
            }
            Err(e) => (Some(Arc::new(UnwindSections::default())), Err(e)),
        };
        if let (Some(key), Some(entry)) = (key, entry) {
            self.entries.insert(key, entry);
        }
        result
    }

    /// Number of files held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drop files that no live [`Unwinder`](super::Unwinder) uses, so a long-running
    /// daemon does not keep the CFI of every library it ever saw.
    pub fn evict_unused(&mut self) {
        self.entries
            .retain(|_, sections| Arc::strong_count(sections) > 1);
    }
}

#[cfg(test)]
mod tests;
