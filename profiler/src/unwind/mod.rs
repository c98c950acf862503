//! User-stack unwinding: registers + stack memory → call-site addresses.
//!
//! Samples come from code built without frame pointers (distribution libc, most
//! release builds), so we unwind with DWARF CFI (`.eh_frame`, `.debug_frame`) through
//! framehop, which falls back to frame pointers where there is no CFI. The unwinder
//! only sees registers and a memory-reading closure: the same code unwinds eBPF stack
//! copies ([`StackSample`]) and stacks read from `/proc/PID/mem` of blocked threads,
//! and tests unwind recorded snapshots with no process at all.
//!
//! Where a module has no CFI for the code (Debian's musl has neither CFI nor frame
//! pointers), the walk would end there; it then scans the stack for the next return
//! address into code with CFI (see [`scan`]) and goes on from that frame.
mod elf;
mod modules;
mod scan;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{FrameAddress, Module, Unwinder as _};

use crate::events::StackSample;
use crate::safe_file::{self, FileKind};

pub use elf::{read_headers, read_unwind_sections, ElfCache, ElfError, UnwindSections};
pub use modules::{AddressSpace, FileMapping, MappedModule};

/// Deepest stack we report; deeper stacks are cut and marked truncated.
pub const MAX_FRAMES: usize = 128;

/// Result of unwinding one stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwoundStack {
    /// Lookup addresses, innermost first: `ip`, then return addresses minus 1 (so they
    /// fall inside the call instruction and symbolize to the calling function).
    pub frames: Vec<u64>,
    /// The walk ended early (memory ran out, bad unwind step, [`MAX_FRAMES`]) rather
    /// than at a recognised root frame.
    pub truncated: bool,
    /// The frame pointer (`rbp`) while each frame ran, as the walk recovered it (empty
    /// when not tracked): JIT runtimes keep frame pointers and store frame data at
    /// fixed offsets from them (see `runtimes::v8`).
    pub frame_pointers: Vec<u64>,
}

/// Unwinds stacks of one process (one [`AddressSpace`] snapshot).
pub struct Unwinder {
    inner: UnwinderX86_64<Arc<[u8]>>,
    cache: CacheX86_64,
    code: Code,
    errors: Vec<String>,
}

impl Unwinder {
    /// Register every module of `space`, taking CFI from `elf_cache` (reading files
    /// not seen before). A module whose CFI cannot be read is unwound with frame
    /// pointers; the reason is in [`Unwinder::errors`].
    pub fn new(space: &AddressSpace, elf_cache: &mut ElfCache) -> Self {
        let mut inner = UnwinderX86_64::new();
        let mut errors = Vec::new();
        let mut modules = Vec::new();
        for m in space.modules() {
            let (info, sections) = match elf_cache.sections(m) {
                Ok(sections) => (sections.section_info(), Some(sections)),
                Err(e) => {
                    errors.push(e.to_string());
                    (Default::default(), None)
                }
            };
            modules.push(CodeModule {
                module: m.clone(),
                sections,
                file: None,
            });
            // For ELF, framehop's base is the load bias: CFI addresses are SVMAs
            // relative to base_svma = 0.
            inner.add_module(Module::new(m.path.clone(), m.avma.clone(), m.bias, info));
        }
        Unwinder {
            inner,
            cache: CacheX86_64::new(),
            code: Code {
                ranges: space.code_ranges().to_vec(),
                modules,
                after_call: HashMap::new(),
            },
            errors,
        }
    }

    /// Modules whose unwind sections could not be read, one line each.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Unwind from registers, reading stack memory through `read_u64`.
    ///
    /// Returns lookup addresses: the first is `ip` itself, the rest are return
    /// addresses minus 1. Stops at [`MAX_FRAMES`], at a zero return address or one
    /// outside executable memory, when memory cannot be read, or when framehop errs.
    ///
    /// In module code without CFI, framehop's frame-pointer step is only trusted if it
    /// gives a return address after a call instruction; otherwise (and where the walk
    /// stops in such code) the stack above the frame's sp is scanned for the next
    /// return address into code with CFI, skipping the frames in between.
    pub fn unwind_with(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        read_u64: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> UnwoundStack {
        self.walk(FrameAddress::InstructionPointer(ip), sp, bp, read_u64)
    }

    /// As [`Unwinder::unwind_with`], for registers taken just after a call returned (the
    /// allocator's return probe): `ip` is a return address, so the first frame is
    /// looked up at `ip - 1`, inside the call instruction, and names the line of the call
    /// (`malloc`'s line, not the next statement's). The registers are the caller's as
    /// they were around the call, so its CFI row is the same at either address.
    pub fn unwind_after_return(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        read_u64: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> UnwoundStack {
        match FrameAddress::from_return_address(ip) {
            Some(first) => self.walk(first, sp, bp, read_u64),
            None => UnwoundStack {
                truncated: true,
                ..Default::default()
            },
        }
    }

    fn walk(
        &mut self,
        first: FrameAddress,
        sp: u64,
        bp: u64,
        read_u64: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> UnwoundStack {
        let mut read_stack = |addr| read_u64(addr).ok_or(());
        let mut regs = UnwindRegsX86_64::new(first.address(), sp, bp);
        let mut frame = first;
        let mut frames = vec![first.address_for_lookup()];
        let mut frame_pointers = vec![bp];
        let mut scans = 0;
        let truncated = loop {
            if frames.len() >= MAX_FRAMES {
                break true;
            }
            let (frame_sp, frame_bp) = (regs.sp(), regs.bp());
            let no_cfi = self.code.lacks_cfi(frame.address_for_lookup());
            let step = self
                .inner
                .unwind_frame(frame, &mut regs, &mut self.cache, &mut read_stack);
            let ended = match step {
                Ok(Some(ret)) if self.code.is_code(ret) => {
                    match FrameAddress::from_return_address(ret) {
                        Some(next) if !no_cfi || self.code.plausible_frame_pointer_step(ret) => {
                            frames.push(next.address_for_lookup());
                            frame_pointers.push(regs.bp());
                            frame = next;
                            continue;
                        }
                        _ => true,
                    }
                }
                // framehop saw the root frame (CFI marks the return address undefined,
                // or the frame-pointer chain ends at zero).
                Ok(None) => false,
                Ok(Some(_)) | Err(_) => true,
            };
            // framehop ends a frame-pointer step at rbp 0 as at a thread's root. An rbp
            // of 0 is most often unknown (a thread blocked before the probes attached:
            // /proc gives sp and pc only), and CFI that finds the frame through rbp then
            // stops the walk short: the frame's own record gives rbp.
            if frame_bp == 0 && !no_cfi && scans < scan::MAX_SCANS {
                if let Some(bp) = self.recover_frame_pointer(frame, frame_sp, &mut read_stack) {
                    scans += 1;
                    regs = UnwindRegsX86_64::new(frame.address(), frame_sp, bp);
                    if let Some(last) = frame_pointers.last_mut() {
                        *last = bp;
                    }
                    continue;
                }
            }
            if no_cfi && scans < scan::MAX_SCANS {
                if let Some((ret, slot, bp)) = self.scan(frame_sp, frame_bp, &mut read_stack) {
                    scans += 1;
                    regs = UnwindRegsX86_64::new(ret, slot + 8, bp);
                    frame = FrameAddress::from_return_address(ret).expect("scan skips zero");
                    frames.push(frame.address_for_lookup());
                    frame_pointers.push(bp);
                    continue;
                }
            }
            break ended;
        };
        UnwoundStack {
            frames,
            truncated,
            frame_pointers,
        }
    }

    /// Scan up from `sp` for a slot holding a plausible return address (see
    /// [`Code::plausible_return`]) from which a CFI step also works (reaching code or the
    /// root), which rejects most stale return addresses left on the stack. Returns the
    /// address, its slot, and the caller's frame pointer.
    ///
    /// The caller's rbp is `bp` unless the frames skipped used rbp themselves: code
    /// without CFI that does (musl's `malloc` internals) pushed the caller's on its
    /// stack, below the return address. Callers whose CFI finds their frame through rbp
    /// (Node's C++ is built with frame pointers, and V8's JIT frames above it are
    /// walked by frame pointer) need that value. So each value saved between `sp` and
    /// the slot that points into the stack just above the slot is a candidate too.
    ///
    /// Where the skipped frames did not save it and `bp` is not the caller's either (a
    /// thread that blocked before the probes attached: /proc gives its sp and pc, not
    /// rbp), the caller's own frame record gives it: a caller with a frame pointer keeps
    /// `[saved rbp][return address]` in its frame, and its rbp is that record's address.
    /// So the first records just above the slot (see [`Unwinder::frame_records`]) are
    /// candidates as well. The candidate whose walk goes on longest through believable
    /// frames wins (`bp` on a tie).
    fn scan(
        &mut self,
        sp: u64,
        bp: u64,
        read_stack: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Option<(u64, u64, u64)> {
        // The first slot of the longest walks (a complete one ends the scan).
        let mut best: Option<(Reach, u64, u64, u64)> = None;
        for i in 0..scan::SCAN_SLOTS {
            let Some(slot) = sp.checked_add(i * 8) else {
                break;
            };
            let Ok(value) = read_stack(slot) else {
                break;
            };
            if !self.code.plausible_return(value) {
                continue;
            }
            let Some(frame) = FrameAddress::from_return_address(value) else {
                continue;
            };
            let mut candidates = vec![bp];
            for j in 0..i {
                let Ok(saved) = read_stack(sp + j * 8) else {
                    break;
                };
                if saved > slot
                    && saved - slot <= scan::MAX_FRAME_BYTES
                    && saved % 8 == 0
                    && saved != bp
                {
                    candidates.push(saved);
                }
            }
            for record in self.frame_records(slot, read_stack) {
                if !candidates.contains(&record) {
                    candidates.push(record);
                }
            }
            if let Some((reach, bp)) = self.longest_walk(frame, slot + 8, &candidates, read_stack) {
                if best.is_none_or(|(longest, ..)| reach > longest) {
                    best = Some((reach, value, slot, bp));
                }
            }
            if best.is_some_and(|(reach, ..)| reach.complete()) {
                break;
            }
        }
        best.map(|(_, value, slot, bp)| (value, slot, bp))
    }

    /// The addresses of the first [`scan::FRAME_RECORDS`] frame records within
    /// [`scan::SCAN_SLOTS`] slots above `slot`: a slot holding a frame pointer that points
    /// further up the stack (at most [`scan::MAX_FRAME_BYTES`]), followed by a plausible
    /// return address.
    fn frame_records(
        &mut self,
        slot: u64,
        read_stack: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Vec<u64> {
        let mut records = Vec::new();
        let mut above = read_stack(slot + 8).ok();
        for i in 1..scan::SCAN_SLOTS {
            let at = slot + i * 8;
            let Some(saved) = above else { break };
            above = read_stack(at + 8).ok();
            if saved > at
                && saved - at <= scan::MAX_FRAME_BYTES
                && saved % 8 == 0
                && above.is_some_and(|ret| self.code.plausible_return(ret))
            {
                records.push(at);
                if records.len() == scan::FRAME_RECORDS {
                    break;
                }
            }
        }
        records
    }

    /// The frame pointer of `frame`, whose walk ended at rbp 0, from the frame records
    /// at and above its `sp`: the candidate whose walk goes on longest through
    /// believable frames, if any goes on at all.
    fn recover_frame_pointer(
        &mut self,
        frame: FrameAddress,
        sp: u64,
        read_stack: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Option<u64> {
        let records = self.frame_records(sp.checked_sub(8)?, read_stack);
        // Walks rank by frames first: a candidate that only reached the root at once
        // is chosen only when none goes on, and then this frame was the root.
        self.longest_walk(frame, sp, &records, read_stack)
            .filter(|(reach, _)| reach.frames > 0)
            .map(|(_, bp)| bp)
    }

    /// Of the frame pointers `candidates` for `frame` at `sp`, the first whose walk goes
    /// on longest (see [`Unwinder::believable_reach`]), if any goes on at all.
    fn longest_walk(
        &mut self,
        frame: FrameAddress,
        sp: u64,
        candidates: &[u64],
        read_stack: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Option<(Reach, u64)> {
        let mut best: Option<(Reach, u64)> = None;
        for &candidate in candidates {
            let reach = self.believable_reach(frame, sp, candidate, read_stack);
            if (reach.frames > 0 || reach.root) && best.is_none_or(|(longest, _)| reach > longest) {
                best = Some((reach, candidate));
            }
        }
        best
    }

    /// How far a walk from `frame` with stack pointer `sp` and frame pointer `bp`
    /// goes through believable frames, up to [`scan::LOOKAHEAD_FRAMES`]. Believable: each
    /// return address follows a call (or lies outside any module, as JIT code does), and
    /// the stack pointer only goes up.
    ///
    /// Frames walked count first, the root second. framehop ends a frame-pointer step
    /// at rbp 0 as at a thread's root, and an unknown rbp is 0 too, so a walk that
    /// "reaches the root" at once from rbp 0 has not reached anything.
    fn believable_reach(
        &mut self,
        mut frame: FrameAddress,
        sp: u64,
        bp: u64,
        read_stack: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Reach {
        let mut regs = UnwindRegsX86_64::new(frame.address(), sp, bp);
        let mut reach = Reach::default();
        while reach.frames < scan::LOOKAHEAD_FRAMES {
            let (sp, bp) = (regs.sp(), regs.bp());
            match self
                .inner
                .unwind_frame(frame, &mut regs, &mut self.cache, &mut |a| read_stack(a))
            {
                // Not at once from rbp 0: that is framehop's end of a frame-pointer
                // chain, which an unknown rbp gives too.
                Ok(None) => {
                    reach.root = reach.frames > 0 || bp != 0;
                    break;
                }
                Ok(Some(next))
                    if self.code.is_code(next)
                        && regs.sp() > sp
                        && (self.code.module_index(next).is_none()
                            || self.code.after_call(next)) =>
                {
                    reach.frames += 1;
                    match FrameAddress::from_return_address(next) {
                        Some(f) => frame = f,
                        None => break,
                    }
                }
                _ => break,
            }
        }
        reach
    }

    /// Unwind an eBPF stack sample.
    pub fn unwind(&mut self, sample: &StackSample) -> UnwoundStack {
        let read = &mut |addr| sample.read_u64(addr);
        if sample.ip_is_return {
            self.unwind_after_return(sample.ip, sample.sp, sample.bp, read)
        } else {
            self.unwind_with(sample.ip, sample.sp, sample.bp, read)
        }
    }
}

/// How far a candidate walk went (see [`Unwinder::believable_reach`]); ordered by
/// frames, then by whether it reached the root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Reach {
    frames: usize,
    root: bool,
}

impl Reach {
    /// Whether the walk reached the root or the lookahead's end: the scan looks no
    /// further.
    fn complete(self) -> bool {
        self.root || self.frames >= scan::LOOKAHEAD_FRAMES
    }
}

/// A mapped module with its CFI, and its file opened on first use to read code bytes.
struct CodeModule {
    module: MappedModule,
    /// Also holds the cache entry in use, so [`ElfCache::evict_unused`] keeps it.
    sections: Option<Arc<elf::UnwindSections>>,
    file: Option<Option<File>>,
}

/// What the unwinder knows about a process's code: executable ranges, modules and
/// which of their addresses follow a call instruction.
struct Code {
    ranges: Vec<Range<u64>>,
    /// Sorted by `avma.start`, as in [`AddressSpace`].
    modules: Vec<CodeModule>,
    /// Memoised [`Code::after_call`] results.
    after_call: HashMap<u64, bool>,
}

impl Code {
    fn is_code(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.start <= addr);
        i > 0 && self.ranges[i - 1].contains(&addr)
    }

    fn module_index(&self, addr: u64) -> Option<usize> {
        let i = self
            .modules
            .partition_point(|m| m.module.avma.start <= addr);
        let i = i.checked_sub(1)?;
        self.modules[i].module.avma.contains(&addr).then_some(i)
    }

    /// Whether `addr` is module code that no CFI covers. Code outside modules (JIT,
    /// `[vdso]`) is left to framehop's frame-pointer walk, as before.
    fn lacks_cfi(&self, addr: u64) -> bool {
        self.module_index(addr).is_some_and(|i| {
            let m = &self.modules[i];
            !m.sections
                .as_ref()
                .is_some_and(|s| s.covers(addr.wrapping_sub(m.module.bias)))
        })
    }

    /// Whether a frame-pointer step out of code without CFI gave a believable return
    /// address: outside modules it cannot be checked and is taken as before.
    fn plausible_frame_pointer_step(&mut self, ret: u64) -> bool {
        self.module_index(ret).is_none() || self.after_call(ret)
    }

    /// Whether the instruction before `ret` in its module's file is a call.
    fn after_call(&mut self, ret: u64) -> bool {
        if let Some(&hit) = self.after_call.get(&ret) {
            return hit;
        }
        let found = self
            .read_before(ret)
            .is_some_and(|code| scan::ends_with_call(&code));
        if self.after_call.len() >= 1 << 16 {
            self.after_call.clear();
        }
        self.after_call.insert(ret, found);
        found
    }

    /// Up to [`scan::MAX_CALL_LEN`] bytes before `addr`, read from the mapped file.
    fn read_before(&mut self, addr: u64) -> Option<Vec<u8>> {
        let i = self.module_index(addr)?;
        let m = &mut self.modules[i];
        let mapping = m
            .module
            .mappings
            .iter()
            .find(|x| x.avma.contains(&(addr - 1)))?;
        let start = addr
            .saturating_sub(scan::MAX_CALL_LEN as u64)
            .max(mapping.avma.start);
        let offset = start - mapping.avma.start + mapping.offset;
        let file = m
            .file
            .get_or_insert_with(|| safe_file::open(&m.module.open_path, FileKind::Elf).ok())
            .as_ref()?;
        let mut buf = vec![0u8; usize::try_from(addr - start).ok()?];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// Whether a stack value may be a return address: in module code whose CFI covers
    /// the call site, right after a call instruction.
    fn plausible_return(&mut self, value: u64) -> bool {
        value > 1
            && self.is_code(value)
            && self.module_index(value - 1).is_some()
            && !self.lacks_cfi(value - 1)
            && self.after_call(value)
    }
}

#[cfg(test)]
mod tests;
