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
        let mut read_stack = |addr| read_u64(addr).ok_or(());
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut frame = FrameAddress::InstructionPointer(ip);
        let mut frames = vec![ip];
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
            if no_cfi && scans < scan::MAX_SCANS {
                if let Some((ret, slot)) = self.scan(frame_sp, frame_bp, &mut read_stack) {
                    scans += 1;
                    regs = UnwindRegsX86_64::new(ret, slot + 8, frame_bp);
                    frame = FrameAddress::from_return_address(ret).expect("scan skips zero");
                    frames.push(frame.address_for_lookup());
                    frame_pointers.push(frame_bp);
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
    /// address and its slot.
    fn scan(
        &mut self,
        sp: u64,
        bp: u64,
        read_stack: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Option<(u64, u64)> {
        for i in 0..scan::SCAN_SLOTS {
            let slot = sp.checked_add(i * 8)?;
            let value = read_stack(slot).ok()?;
            if !self.code.plausible_return(value) {
                continue;
            }
            let mut regs = UnwindRegsX86_64::new(value, slot + 8, bp);
            let frame = FrameAddress::from_return_address(value)?;
            match self
                .inner
                .unwind_frame(frame, &mut regs, &mut self.cache, &mut |a| read_stack(a))
            {
                Ok(None) => return Some((value, slot)),
                Ok(Some(next)) if self.code.is_code(next) => return Some((value, slot)),
                _ => {}
            }
        }
        None
    }

    /// Unwind an eBPF stack sample.
    pub fn unwind(&mut self, sample: &StackSample) -> UnwoundStack {
        self.unwind_with(sample.ip, sample.sp, sample.bp, &mut |addr| {
            sample.read_u64(addr)
        })
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
mod tests {
    use std::collections::HashMap;

    use super::testutil::{capture_stack_in_known_chain, read_own_memory};
    use super::*;
    use crate::procfs;
    use crate::symbolize::Symbolizer;

    fn own_space() -> AddressSpace {
        let pid = std::process::id();
        AddressSpace::from_maps(pid, &procfs::read_maps(pid).unwrap())
    }

    /// Names of the (non-inlined) function of each unwound frame.
    fn function_names(space: &AddressSpace, frames: &[u64]) -> Vec<String> {
        Symbolizer::new()
            .symbolize(space, frames)
            .into_iter()
            .map(|chain| chain[0].function.clone())
            .collect()
    }

    /// Check that a live snapshot of level_a → level_b → level_c unwinds through all three, in order.
    #[test]
    fn unwinds_live_snapshot_of_known_chain() {
        let sample = capture_stack_in_known_chain();
        let space = own_space();
        assert!(space.errors().is_empty(), "{:?}", space.errors());
        let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
        let stack = unwinder.unwind(&sample);
        assert_eq!(stack.frames[0], sample.ip);
        let names = function_names(&space, &stack.frames);
        let pos = |f: &str| {
            names
                .iter()
                .position(|n| n.ends_with(f))
                .unwrap_or_else(|| panic!("{f} not in {names:#?}"))
        };
        assert_eq!(pos("level_c"), 0, "{names:#?}");
        assert_eq!(pos("level_b"), 1, "{names:#?}");
        assert_eq!(pos("level_a"), 2, "{names:#?}");
        assert!(
            names[3..5]
                .iter()
                .any(|n| n.ends_with("unwinds_live_snapshot_of_known_chain")),
            "{names:#?}"
        );
    }

    /// A recorded stack and the library it ran in, from `tests/data/unwind/`.
    fn recorded_fixture() -> (Vec<procfs::MapEntry>, StackSample) {
        use std::os::unix::fs::MetadataExt;

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unwind");
        let lib = dir.join("libchain.so");
        let inode = std::fs::metadata(&lib).unwrap().ino();
        let text = std::fs::read_to_string(dir.join("chain.stack")).unwrap();
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        let (mut maps, mut regs, mut bytes) = (Vec::new(), HashMap::new(), Vec::new());
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                ["map", start, end, perms, offset] => maps.push(procfs::MapEntry {
                    start: hex(start),
                    end: hex(end),
                    read: true,
                    write: perms.contains('w'),
                    exec: perms.contains('x'),
                    shared: false,
                    offset: hex(offset),
                    inode,
                    path: lib.to_str().unwrap().to_string(),
                }),
                ["stack", data] => bytes.extend(
                    (0..data.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&data[i..i + 2], 16).unwrap()),
                ),
                [reg, value] => {
                    regs.insert(reg, hex(value));
                }
                _ => panic!("bad fixture line {line:?}"),
            }
        }
        let sample = StackSample {
            ip: regs["ip"],
            sp: regs["sp"],
            bp: regs["bp"],
            base: regs["sp"],
            bytes,
            ret_fix: None,
        };
        (maps, sample)
    }

    /// Check that the recorded fixture (no frame pointers, garbage rbp) unwinds through .eh_frame to chain_a.
    #[test]
    fn unwinds_recorded_fixture() {
        let (maps, sample) = recorded_fixture();
        let space = AddressSpace::from_maps(std::process::id(), &maps);
        assert!(space.errors().is_empty(), "{:?}", space.errors());
        assert_eq!(space.modules().len(), 1);
        let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
        let stack = unwinder.unwind(&sample);
        let names = function_names(&space, &stack.frames);
        assert_eq!(names, ["chain_c", "chain_b", "chain_a"]);
        // The next return address is in the recorder's main, which the test does not map.
        assert!(stack.truncated);
    }

    /// Check that a frame without CFI is skipped by scanning to the next return address
    /// after a call into CFI-covered code, passing over a code pointer with no call before it.
    #[test]
    fn scans_past_frame_without_cfi() {
        let (maps, sample) = recorded_fixture();
        let space = AddressSpace::from_maps(std::process::id(), &maps);
        let bias = space.modules()[0].bias;
        let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
        // Return address into chain_b (after `call chain_c@plt` at 0x1064) in the recording.
        let ret_b = bias + 0x1069;
        let slot = sample
            .bytes
            .chunks_exact(8)
            .position(|c| u64::from_le_bytes(c.try_into().unwrap()) == ret_b)
            .expect("chain_b's return address on the recorded stack");
        // A function without CFI (past .text, which ends at 0x10a1) whose frame holds a
        // pointer into chain_b not preceded by a call (0x106d follows a movzbl) and junk,
        // then the recorded stack from chain_b's return address on; rbp is garbage.
        let decoy = bias + 0x106d;
        let mut bytes = [decoy, 0x1234].map(u64::to_le_bytes).concat();
        bytes.extend_from_slice(&sample.bytes[slot * 8..]);
        let sp = sample.sp + slot as u64 * 8 - 16;
        let synthetic = StackSample {
            ip: bias + 0x10b0,
            sp,
            bp: 1,
            base: sp,
            bytes,
            ret_fix: None,
        };
        assert!(unwinder.code.lacks_cfi(synthetic.ip));
        assert!(!unwinder.code.lacks_cfi(decoy));
        let stack = unwinder.unwind(&synthetic);
        assert_eq!(stack.frames[..2], [synthetic.ip, ret_b - 1]);
        assert!(!stack.frames.contains(&(decoy - 1)), "{:x?}", stack.frames);
        let names = function_names(&space, &stack.frames[1..]);
        assert_eq!(names, ["chain_b", "chain_a"]);
        assert!(stack.truncated);
    }

    /// Check that a thread blocked in glibc's read() (no frame pointer) unwinds to its caller via .eh_frame.
    #[test]
    fn unwinds_thread_blocked_in_libc_syscall() {
        let Some(blocked) = testutil::BlockedThread::start() else {
            eprintln!("skipped: /proc/self/task/TID/syscall is not readable here");
            return;
        };
        let space = own_space();
        let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
        // /proc/PID/task/TID/syscall gives no rbp: unwinding must not need it.
        let stack = unwinder.unwind_with(blocked.pc, blocked.sp, 0, &mut read_own_memory);
        let names = function_names(&space, &stack.frames);
        drop(blocked);
        let libc = space
            .module_for(stack.frames[0])
            .map(|m| m.basename().to_string());
        assert!(
            libc.as_deref().is_some_and(|m| m.starts_with("libc")),
            "{libc:?}"
        );
        assert!(names[1].ends_with("blocked_in_read"), "{names:#?}");
        assert!(names[2].ends_with("blocked_thread_body"), "{names:#?}");
        assert!(
            !stack.truncated,
            "thread stacks end at clone3's CFI: {names:#?}"
        );
    }

    /// Check that unreadable stack memory gives just [ip], marked truncated.
    #[test]
    fn unreadable_memory_gives_ip_only() {
        let space = own_space();
        let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
        let ip = testutil::level_a as *const () as u64;
        let stack = unwinder.unwind_with(ip, 0x7ffc_0000_0000, 0x7ffc_0000_0100, &mut |_| None);
        assert_eq!(
            stack,
            UnwoundStack {
                frames: vec![ip],
                truncated: true,
                frame_pointers: vec![0x7ffc_0000_0100],
            }
        );
    }

    /// Check that a return address outside executable memory ends the walk as truncated.
    #[test]
    fn return_address_outside_code_stops() {
        let space = AddressSpace::from_modules(Vec::new());
        let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
        // No module: framehop walks frame pointers; bp → [saved bp, bogus return address].
        let stack = [0x2000u64, 0x1234];
        let mut read = |addr: u64| {
            stack
                .get(usize::try_from(addr.checked_sub(0x1000)? / 8).ok()?)
                .copied()
        };
        let out = unwinder.unwind_with(0x5000, 0x0ff8, 0x1000, &mut read);
        assert_eq!(
            out,
            UnwoundStack {
                frames: vec![0x5000],
                truncated: true,
                frame_pointers: vec![0x1000],
            }
        );
    }

    /// Check that a corrupt ELF is recorded, and unwinding inside it neither panics nor invents frames.
    #[test]
    fn corrupt_elf_is_recorded_not_fatal() {
        use std::os::unix::fs::MetadataExt;

        let path =
            std::env::temp_dir().join(format!("profiler-unwind-garbage-{}.so", std::process::id()));
        std::fs::write(&path, vec![0xa5u8; 8192]).unwrap();
        let path_str = path.to_str().unwrap().to_string();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let maps = [procfs::MapEntry {
            start: 0x10_0000,
            end: 0x10_2000,
            read: true,
            write: false,
            exec: true,
            shared: false,
            offset: 0,
            inode,
            path: path_str.clone(),
        }];
        let space = AddressSpace::from_maps(std::process::id(), &maps);
        assert_eq!(space.modules().len(), 1);
        assert_eq!(space.errors().len(), 1);
        assert!(
            space.errors()[0].starts_with(&format!("corrupt ELF {path_str}: ")),
            "{:?}",
            space.errors()
        );

        // The same file handed over directly as a module, e.g. from a recording.
        let module = MappedModule {
            path: path_str.clone(),
            open_path: path.clone(),
            avma: 0x10_0000..0x10_2000,
            bias: 0x10_0000,
            build_id: None,
            mappings: vec![FileMapping {
                avma: 0x10_0000..0x10_2000,
                offset: 0,
                exec: true,
            }],
        };
        let space = AddressSpace::from_modules(vec![module]);
        let mut cache = ElfCache::new();
        let mut unwinder = Unwinder::new(&space, &mut cache);
        assert!(
            unwinder.errors()[0].starts_with("corrupt ELF"),
            "{:?}",
            unwinder.errors()
        );
        // Frame-pointer fallback; a non-zero bp, as framehop reads bp == 0 as the root.
        let stack = unwinder.unwind_with(0x10_0010, 0x8000, 0x8100, &mut |_| None);
        assert_eq!(
            stack,
            UnwoundStack {
                frames: vec![0x10_0010],
                truncated: true,
                frame_pointers: vec![0x8100],
            }
        );
        // Remembered as "no CFI": a second unwinder does not re-read or re-report it.
        assert!(Unwinder::new(&space, &mut cache).errors().is_empty());
        std::fs::remove_file(&path).ok();
    }

    /// Check that the ELF cache shares one file's sections between unwinders and evicts unused ones.
    #[test]
    fn elf_cache_shares_and_evicts() {
        let space = own_space();
        let mut cache = ElfCache::new();
        let first = Unwinder::new(&space, &mut cache);
        let files = cache.len();
        assert!(files >= 2, "test binary and libc at least");
        let second = Unwinder::new(&space, &mut cache);
        assert_eq!(cache.len(), files);
        drop((first, second));
        cache.evict_unused();
        assert!(cache.is_empty());
    }
}
