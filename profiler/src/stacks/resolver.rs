//! The stacks stage: a sampled stack (registers plus a copy of stack memory) becomes an
//! interned [`StackId`]: unwind in the process's address space, restore return
//! addresses a uretprobe trampoline replaced, symbolize, intern.
//!
//! One [`StackResolver`] per capture; each followed process has its address space and
//! unwinder, re-read when code is mapped (exec, `PROT_EXEC` file mappings, code the
//! unwinder does not know yet).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::js_frames::{JsFrames, V8Binaries};
use super::{locations, StackTable, UnwindCache};
use crate::{
    events::{StackId, StackSample},
    procfs::{self, MapEntry},
    symbolize::{Frame, Symbolizer},
    unwind::{AddressSpace, ElfCache, Unwinder, UnwoundStack},
};

/// A stack resolved to its interned id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub id: StackId,
    /// The unwinder stopped early (stack copy too short, unreadable memory).
    pub truncated: bool,
}

/// Unwinds, symbolizes and interns the stacks of every followed process.
pub struct StackResolver {
    table: StackTable,
    symbolizer: Symbolizer,
    elf_cache: ElfCache,
    v8_binaries: V8Binaries,
    processes: HashMap<u32, ProcessStacks>,
}

/// What unwinding one process needs.
struct ProcessStacks {
    space: AddressSpace,
    unwinder: Unwinder,
    /// An executable file was mapped since `space` was read: re-read before unwinding.
    space_stale: bool,
    /// When `space` was last read, to re-read at most once a second for unknown code.
    space_read_at: Instant,
    /// Stacks already unwound in this address space.
    unwind_cache: UnwindCache,
    /// The kernel's `[uprobes]` mapping (uretprobe trampoline), once it exists.
    uprobes_vma: Option<(u64, u64)>,
    uprobes_checked_at: Option<Instant>,
    /// JavaScript frames named from V8's heap, when the process runs node.
    js: JsFrames,
    /// Stacks unwound and JS-named ahead of their turn ([`StackResolver::prepare`]), by
    /// the address of the sample's stack bytes.
    prepared: HashMap<usize, (UnwoundStack, u64)>,
}

impl Default for StackResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl StackResolver {
    pub fn new() -> Self {
        Self {
            table: StackTable::new(),
            symbolizer: Symbolizer::new(),
            elf_cache: ElfCache::new(),
            v8_binaries: V8Binaries::default(),
            processes: HashMap::new(),
        }
    }

    /// The interned stacks.
    pub fn table(&self) -> &StackTable {
        &self.table
    }

    /// Follow process `pid` with the mappings `maps` (replacing an earlier process with
    /// the same PID).
    pub fn add_process(&mut self, pid: u32, maps: &[MapEntry]) {
        let space = AddressSpace::from_maps(pid, maps);
        let unwinder = Unwinder::new(&space, &mut self.elf_cache);
        let js = JsFrames::attach(pid, &space, &mut self.v8_binaries);
        self.processes.insert(
            pid,
            ProcessStacks {
                space,
                unwinder,
                space_stale: false,
                space_read_at: Instant::now(),
                unwind_cache: UnwindCache::default(),
                uprobes_vma: None,
                uprobes_checked_at: None,
                js,
                prepared: HashMap::new(),
            },
        );
    }

    /// What naming `pid`'s JavaScript frames from V8's heap gave (None: not node).
    /// The census of `pid`'s suspended async functions, when it runs node.
    pub fn async_census(
        &self,
        pid: u32,
        limits: crate::runtimes::v8::ScanLimits,
    ) -> Option<crate::runtimes::v8::AsyncCensusReport> {
        self.processes.get(&pid)?.js.async_census(pid, limits)
    }

    pub fn js_report(&self, pid: u32) -> Option<crate::runtimes::v8::JsFrameReport> {
        self.processes.get(&pid)?.js.report()
    }

    /// Stop following `pid` (its stacks stay interned).
    pub fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Code was mapped in `pid` (exec, an executable file mapping): re-read its address
    /// space before the next unwind.
    pub fn code_changed(&mut self, pid: u32) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.space_stale = true;
        }
    }

    /// Unwind a sample of a node process and read its JS frames now, before the
    /// batch it came in is symbolized (which can take long the first time): V8 moves
    /// and frees objects within milliseconds. [`StackResolver::resolve`] uses the
    /// result; [`StackResolver::forget_prepared`] drops what was not used.
    pub fn prepare(&mut self, pid: u32, sample: &StackSample) {
        let Some(p) = self.processes.get_mut(&pid) else {
            return;
        };
        if !p.js.active() || p.space_stale || p.unwind_cache.get(sample).is_some() {
            return;
        }
        if sample.ret_fix.is_some() {
            p.find_uprobes_vma(pid);
        }
        let (mut unwound, read_end) = p.unwind_fresh(pid, sample, &mut self.elf_cache);
        p.js.name_stack(&p.space, &mut unwound, sample);
        p.prepared
            .insert(sample.bytes.as_ptr() as usize, (unwound, read_end));
    }

    /// Drop prepared stacks that no record used.
    pub fn forget_prepared(&mut self) {
        for p in self.processes.values_mut() {
            p.prepared.clear();
        }
    }

    /// Unwind a stack of process `pid` and intern it; None if `pid` is not followed.
    pub fn resolve(&mut self, pid: u32, sample: &StackSample) -> Option<Resolved> {
        let p = self.processes.get_mut(&pid)?;
        if p.space_stale {
            p.refresh_space(pid, &mut self.elf_cache);
            if !p.js.active() {
                p.js = JsFrames::attach(pid, &p.space, &mut self.v8_binaries);
            }
        }
        if sample.ret_fix.is_some() {
            p.find_uprobes_vma(pid);
        }
        if let Some((id, truncated)) = p.unwind_cache.get(sample) {
            return Some(Resolved { id, truncated });
        }
        let (unwound, read_end) = match p.prepared.remove(&(sample.bytes.as_ptr() as usize)) {
            Some(prepared) => prepared,
            None => {
                let (mut unwound, read_end) = p.unwind_fresh(pid, sample, &mut self.elf_cache);
                p.js.name_stack(&p.space, &mut unwound, sample);
                (unwound, read_end)
            }
        };
        let truncated = unwound.truncated;
        let symbolizer = &mut self.symbolizer;
        let space = &p.space;
        let js = &mut p.js;
        let id = self
            .table
            .intern_located(pid, unwound.frames, truncated, |addrs| {
                let code: Vec<u64> = addrs.iter().map(|&a| js.original(a)).collect();
                let mut per_addr = symbolizer.symbolize_process(pid, space, &code);
                js.apply(addrs, &mut per_addr);
                let locations = locations::root_first_locations(space, &code, &per_addr);
                (root_first_names(per_addr), locations)
            });
        p.unwind_cache.insert(sample, read_end, id, truncated);
        for error in self.symbolizer.take_new_errors() {
            eprintln!("profiler: note: process {pid}: {error}");
        }
        Some(Resolved { id, truncated })
    }
}

/// How often a walk through code the address space does not know re-reads the space.
const SPACE_REREAD: Duration = Duration::from_secs(1);
/// As [`SPACE_REREAD`], for a walk that also stopped early. A burst of stacks through
/// JIT code V8 compiled moments ago (a pool's new connections each writing its first
/// `BEGIN`) stops at the same unknown return address until the space is read again:
/// with once a second, 9 of 10 such stacks ended at `JS:writeGeneric`.
const SPACE_REREAD_STOPPED: Duration = Duration::from_millis(20);

impl ProcessStacks {
    /// Unwind `sample`; when the walk reached code the address space does not know (a
    /// dlopen, or JIT code V8 mapped since the last read), re-read the space (at most
    /// once a second, or every 20 ms while walks stop there) and unwind again. Prepared
    /// stacks of a node process go through here too.
    fn unwind_fresh(
        &mut self,
        pid: u32,
        sample: &StackSample,
        cache: &mut ElfCache,
    ) -> (UnwoundStack, u64) {
        let (unwound, read_end) = self.unwind_tracking_reads(sample);
        let wait = if unwound.truncated {
            SPACE_REREAD_STOPPED
        } else {
            SPACE_REREAD
        };
        if self.space_read_at.elapsed() > wait
            && unwound
                .frames
                .iter()
                .any(|&a| self.space.module_for(a).is_none())
        {
            self.refresh_space(pid, cache);
            return self.unwind_tracking_reads(sample);
        }
        (unwound, read_end)
    }

    /// Unwind `sample`, also returning the end of the highest 8 bytes the walk read.
    fn unwind_tracking_reads(&mut self, sample: &StackSample) -> (UnwoundStack, u64) {
        let mut end = sample.sp;
        let trampoline = self.uprobes_vma;
        let read = &mut |addr| {
            let v = sample.read_u64(addr)?;
            end = end.max(addr + 8);
            match (sample.ret_fix, trampoline) {
                (Some(fix), Some((lo, hi))) if (lo..hi).contains(&v) => {
                    Some(fix.original(addr).unwrap_or(v))
                }
                _ => Some(v),
            }
        };
        let (ip, sp, bp) = (sample.ip, sample.sp, sample.bp);
        let unwound = if sample.ip_is_return {
            self.unwinder.unwind_after_return(ip, sp, bp, read)
        } else {
            self.unwinder.unwind_with(ip, sp, bp, read)
        };
        (unwound, end)
    }

    /// Look up the `[uprobes]` mapping, which the kernel creates at the first hijacked
    /// return; re-read at most every 100 ms until it exists.
    fn find_uprobes_vma(&mut self, pid: u32) {
        if self.uprobes_vma.is_some()
            || self
                .uprobes_checked_at
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.uprobes_checked_at = Some(Instant::now());
        if let Ok(maps) = procfs::read_maps(pid) {
            self.uprobes_vma = maps
                .iter()
                .find(|m| m.path == "[uprobes]")
                .map(|m| (m.start, m.end));
        }
    }

    fn refresh_space(&mut self, pid: u32, cache: &mut ElfCache) {
        self.unwind_cache.clear();
        if let Ok(maps) = procfs::read_maps(pid) {
            self.space = AddressSpace::from_maps(pid, &maps);
            self.unwinder = Unwinder::new(&self.space, cache);
        }
        self.space_stale = false;
        self.space_read_at = Instant::now();
    }
}

/// Flatten per-address frames (leaf address first; within one address, the function
/// and then its inlined callees) into names, root first.
/// An inlined frame with the same name as the frame it is inlined into (glibc's
/// `__GI___mmap64` is reported that way) is one frame to a reader, so it is shown once.
fn root_first_names(per_addr: Vec<Vec<Frame>>) -> Vec<String> {
    let mut names = Vec::new();
    for frames in per_addr.into_iter().rev() {
        let mut previous: Option<String> = None;
        for f in frames {
            if previous.as_deref() != Some(f.function.as_str()) {
                names.push(f.function.clone());
            }
            previous = Some(f.function);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, inlined: bool) -> Frame {
        Frame {
            function: name.into(),
            module: "m".into(),
            file: None,
            line: None,
            inlined,
        }
    }

    /// Check that names come out root first, with inlined callees after their caller and
    /// a same-named inlined frame shown once.
    #[test]
    fn names_root_first_without_self_inlined_duplicates() {
        let per_addr = vec![
            vec![frame("__mmap64", false), frame("__mmap64", true)],
            vec![frame("map_region", false), frame("touch", true)],
            vec![frame("main", false)],
        ];
        assert_eq!(
            root_first_names(per_addr),
            vec!["main", "map_region", "touch", "__mmap64"]
        );
    }
}
