//! Attaching the allocator uprobes and reading the resident-memory map.
//!
//! Programs are loaded once and attached once per (binary, entry point, process):
//! attaching with a process id makes the kernel plant the breakpoints in that process
//! only, so other processes that map the same C library pay nothing.
use crate::model::ResidentTrack;
use std::{collections::HashSet, num::NonZeroU32, path::Path};

use aya::{
    maps::{HashMap, PerCpuHashMap},
    programs::{uprobe::UProbeScope, TracePoint, UProbe},
};
use profiler_common::{FreeFlow, RssTrack};

use super::{CollectError, Collector};
use crate::allocator::{detect::ENTRY_POINTS, AllocatorChoice, HeapLayout};

/// The return program shared by every allocating entry point.
const RETURN_PROGRAM: &str = "alloc_return";

/// What [`Collector::attach_allocator`] managed to probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachedAllocator {
    /// Entry points found and probed (with prefix), e.g. `malloc`, `free`.
    pub functions: Vec<String>,
}

impl Collector {
    /// Probe the allocator entry points of `choice.path` for process `pid` (or every
    /// process when `pid` is None). `root` is prepended to the path, e.g.
    /// `/proc/PID/root` for a process in another mount namespace.
    pub fn attach_allocator(
        &mut self,
        choice: &AllocatorChoice,
        root: &Path,
        pid: Option<u32>,
    ) -> Result<AttachedAllocator, CollectError> {
        let relative = choice.path.strip_prefix("/").unwrap_or(&choice.path);
        let binary = root.join(relative);
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let mut attached = AttachedAllocator::default();
        let mut seen_offsets = HashSet::new();
        for &(base, entry) in ENTRY_POINTS {
            let symbol = format!("{}{base}", choice.prefix);
            let (program, has_return) = entry.programs();
            // aliases (e.g. aligned_alloc = memalign in some builds) resolve to one
            // address: probing it twice would count each call twice.
            let Some(offset) = symbol_offset(&binary, &symbol) else {
                continue;
            };
            if !seen_offsets.insert(offset) {
                continue;
            }
            self.attach_uprobe(program, offset, &binary, scope)?;
            if has_return {
                self.attach_uprobe(RETURN_PROGRAM, offset, &binary, scope)?;
            }
            attached.functions.push(symbol);
        }
        if attached.functions.is_empty() {
            return Err(CollectError::Load(format!(
                "{} defines no allocator entry point (malloc, free, …)",
                binary.display()
            )));
        }
        Ok(attached)
    }

    fn attach_uprobe(
        &mut self,
        name: &str,
        offset: u64,
        binary: &Path,
        scope: UProbeScope,
    ) -> Result<(), CollectError> {
        let program: &mut UProbe = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| CollectError::Load(format!("program {name} missing from object")))?
            .try_into()
            .map_err(|e| CollectError::Load(format!("{name}: {e}")))?;
        if !self.loaded_uprobes.contains(name) {
            program.load().map_err(|e| CollectError::Verifier {
                program: name.to_string(),
                detail: format!("{e:#}"),
            })?;
            self.loaded_uprobes.insert(name.to_string());
        }
        program
            .attach(offset, binary, scope)
            .map_err(|e| CollectError::Uprobe {
                binary: binary.display().to_string(),
                detail: format!("{name} at {offset:#x}: {e}"),
            })?;
        self.note_attached(name, format!("uprobe {}+{offset:#x}", binary.display()));
        Ok(())
    }

    /// Attach `kmem:rss_stat` (resident memory per target). Returns false when the
    /// kernel lacks the tracepoint.
    pub fn attach_rss_probe(&mut self) -> Result<bool, CollectError> {
        let program: &mut TracePoint = self
            .ebpf
            .program_mut("rss_stat")
            .ok_or_else(|| CollectError::Load("program rss_stat missing from object".into()))?
            .try_into()
            .map_err(|e| CollectError::Load(format!("rss_stat: {e}")))?;
        program.load().map_err(|e| CollectError::Verifier {
            program: "rss_stat".into(),
            detail: format!("{e:#}"),
        })?;
        let attached = program.attach("kmem", "rss_stat").is_ok();
        if attached {
            self.note_attached("rss_stat", "tracepoint kmem:rss_stat".into());
        }
        Ok(attached)
    }

    /// Tell the kernel side how the allocator of `pid` stores block sizes, so frees of
    /// blocks it did not see allocated are sized.
    pub fn set_heap_layout(&mut self, pid: u32, layout: HeapLayout) -> Result<(), CollectError> {
        let mut m: HashMap<_, u32, u32> =
            HashMap::try_from(super::map(&mut self.ebpf, "HEAP_LAYOUT")?)
                .map_err(super::map_error("HEAP_LAYOUT"))?;
        m.insert(pid, layout.code(), 0)
            .map_err(super::map_error("HEAP_LAYOUT"))
    }

    /// Frees of blocks of `pid` that were not sampled live, since it was first
    /// followed, summed over CPUs (None before the first such free).
    pub fn free_flow(&self, pid: u32) -> Option<FreeFlow> {
        let map = PerCpuHashMap::<_, u32, FreeFlow>::try_from(self.ebpf.map("FREE_FLOW")?).ok()?;
        let per_cpu = map.get(&pid, 0).ok()?;
        Some(per_cpu.iter().fold(FreeFlow::default(), |a, f| FreeFlow {
            frees: a.frees + f.frees,
            unsized_frees: a.unsized_frees + f.unsized_frees,
            sampled: a.sampled + f.sampled,
            weight: a.weight + f.weight,
            variance: a.variance + f.variance,
            sized_bytes: a.sized_bytes + f.sized_bytes,
        }))
    }

    /// Resident memory of `pid` seen by `kmem:rss_stat`, if any update arrived.
    pub fn resident_track(&self, pid: u32) -> Option<ResidentTrack> {
        let map = HashMap::<_, u32, RssTrack>::try_from(self.ebpf.map("RSS_TRACK")?).ok()?;
        let t = map.get(&pid, 0).ok()?;
        Some(ResidentTrack {
            now: t.now,
            peak: t.peak,
            peak_total: t.peak_total,
            updates: t.updates,
        })
    }
}

/// File offset of `symbol` in the ELF file at `binary` (what a uprobe attaches to), or
/// None when the file does not define it.
fn symbol_offset(binary: &Path, symbol: &str) -> Option<u64> {
    use object::{Object, ObjectSection, ObjectSymbol};
    // Read lazily from a file opened as untrusted input: `--allocator /dev/zero` or a
    // FIFO planted in a container is refused, and a large binary is not read whole.
    let file = crate::safe_file::open(binary, crate::safe_file::FileKind::Elf).ok()?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let sym = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .find(|s| s.is_definition() && s.name() == Ok(symbol) && s.address() != 0)?;
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let (file_offset, _) = section.file_range()?;
    Some(sym.address() - section.address() + file_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that symbol offsets are file offsets that hold the function's code.
    #[test]
    fn symbol_offset_points_at_the_code() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
        let Some(libc) = libc else {
            eprintln!("skipped: no glibc on this machine");
            return;
        };
        let malloc = symbol_offset(libc, "malloc").expect("glibc defines malloc");
        let free = symbol_offset(libc, "free").expect("glibc defines free");
        assert_ne!(malloc, free);
        assert!(symbol_offset(libc, "no_such_function").is_none());
        assert!(symbol_offset(Path::new("/nonexistent"), "malloc").is_none());
    }
}
