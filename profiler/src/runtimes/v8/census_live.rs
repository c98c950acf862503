//! The census of a live process: which of its memory to scan, and reading it through
//! `/proc/PID/mem` while it runs (never stopped, never written).
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::async_objects::AsyncLayout;
use super::binary::V8Binary;
use super::census::{self, AsyncCensus, ScanLimits};
use crate::procfs::{self, MapEntry};

/// Why a census could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    #[error("no census of suspended async functions: {0}")]
    Metadata(#[from] super::MetadataError),
    #[error("cannot read the process's memory: {0}")]
    Proc(#[from] procfs::ProcError),
    #[error("cannot read the process's memory: {0}")]
    Io(#[from] std::io::Error),
}

/// Mappings that may hold V8's heap: readable, anonymous (V8 maps its pages itself),
/// not the stack, the C heap or the kernel's pages.
pub fn heap_mappings(maps: &[MapEntry]) -> Vec<Range<u64>> {
    maps.iter()
        .filter(|m| m.read && (m.path.is_empty() || m.path.starts_with("[anon:")))
        .map(|m| m.start..m.end)
        .collect()
}

/// Take the census of process `pid`, which runs `binary`: scans until two agree
/// ([`census::take_settled`]), each over the heap as it is mapped when it starts.
pub fn census_of(
    pid: u32,
    binary: &V8Binary,
    limits: ScanLimits,
) -> Result<AsyncCensus, CensusError> {
    let async_layout = AsyncLayout::from_symbols(&binary.symbols, &binary.layout)?;
    let mem = File::open(procfs::proc_path(pid, "mem"))?;
    let mut read = |addr: u64, buf: &mut [u8]| mem.read_exact_at(buf, addr).is_ok();
    let mut error = None;
    let census = census::take_settled(limits, |limits| {
        let maps = match procfs::read_maps(pid) {
            Ok(maps) => maps,
            Err(e) => {
                error.get_or_insert(e);
                return AsyncCensus {
                    cut: Some("the process's maps could not be read".into()),
                    ..Default::default()
                };
            }
        };
        let mappings = heap_mappings(&maps);
        // Without pagemap (not root), every page is read: untouched ones read as zeros.
        let ranges = procfs::touched_ranges(pid, &mappings).unwrap_or(mappings);
        census::take(&binary.layout, &async_layout, &ranges, &mut read, limits)
    });
    match error {
        Some(e) if census.scans <= 1 => Err(e.into()),
        _ => Ok(census),
    }
}
