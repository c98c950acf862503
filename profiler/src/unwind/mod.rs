//! User-stack unwinding: registers + stack memory → call-site addresses.
//!
//! Samples come from code built without frame pointers (distribution libc, most
//! release builds), so we unwind with DWARF CFI (`.eh_frame`, `.debug_frame`) through
//! framehop, which falls back to frame pointers where there is no CFI. The unwinder
//! only sees registers and a memory-reading closure: the same code unwinds eBPF stack
//! copies ([`StackSample`]) and stacks read from `/proc/PID/mem` of blocked threads,
//! and tests unwind recorded snapshots with no process at all.
mod elf;
mod modules;
#[cfg(test)]
pub(crate) mod testutil;

use std::ops::Range;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{FrameAddress, Module, Unwinder as _};

use crate::events::StackSample;

pub use elf::{ElfCache, ElfError};
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
}

/// Unwinds stacks of one process (one [`AddressSpace`] snapshot).
pub struct Unwinder {
    inner: UnwinderX86_64<Arc<[u8]>>,
    cache: CacheX86_64,
    code: Vec<Range<u64>>,
    errors: Vec<String>,
    /// Holds the cache entries in use, so [`ElfCache::evict_unused`] keeps them.
    _sections: Vec<Arc<elf::UnwindSections>>,
}

impl Unwinder {
    /// Register every module of `space`, taking CFI from `elf_cache` (reading files
    /// not seen before). A module whose CFI cannot be read is unwound with frame
    /// pointers; the reason is in [`Unwinder::errors`].
    pub fn new(space: &AddressSpace, elf_cache: &mut ElfCache) -> Self {
        let mut inner = UnwinderX86_64::new();
        let mut errors = Vec::new();
        let mut in_use = Vec::new();
        for m in space.modules() {
            let info = match elf_cache.sections(m) {
                Ok(sections) => {
                    let info = sections.section_info();
                    in_use.push(sections);
                    info
                }
                Err(e) => {
                    errors.push(e.to_string());
                    Default::default()
                }
            };
            // For ELF, framehop's base is the load bias: CFI addresses are SVMAs
            // relative to base_svma = 0.
            inner.add_module(Module::new(m.path.clone(), m.avma.clone(), m.bias, info));
        }
        Unwinder {
            inner,
            cache: CacheX86_64::new(),
            code: space.code_ranges().to_vec(),
            errors,
            _sections: in_use,
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
    pub fn unwind_with(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        read_u64: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> UnwoundStack {
        let mut read_stack = |addr| read_u64(addr).ok_or(());
        let regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut iter = self
            .inner
            .iter_frames(ip, regs, &mut self.cache, &mut read_stack);
        let mut frames = Vec::new();
        let truncated = loop {
            if frames.len() >= MAX_FRAMES {
                break true;
            }
            match iter.next() {
                Ok(Some(FrameAddress::InstructionPointer(pc))) => frames.push(pc),
                Ok(Some(ret @ FrameAddress::ReturnAddress(_))) => {
                    if !is_code(&self.code, ret.address()) {
                        break true;
                    }
                    frames.push(ret.address_for_lookup());
                }
                // framehop saw the root frame (CFI marks the return address undefined,
                // or the frame-pointer chain ends at zero).
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        UnwoundStack { frames, truncated }
    }

    /// Unwind an eBPF stack sample.
    pub fn unwind(&mut self, sample: &StackSample) -> UnwoundStack {
        self.unwind_with(sample.ip, sample.sp, sample.bp, &mut |addr| {
            sample.read_u64(addr)
        })
    }
}

fn is_code(code: &[Range<u64>], addr: u64) -> bool {
    let i = code.partition_point(|r| r.start <= addr);
    i > 0 && code[i - 1].contains(&addr)
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
                truncated: true
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
                truncated: true
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
                truncated: true
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
