//! Tests of the unwinder on live stacks of this process and recorded snapshots.
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

/// The stack recorded in `libchain.so`, from `tests/data/unwind/`.
fn recorded_fixture() -> (Vec<procfs::MapEntry>, StackSample) {
    recorded("libchain.so", "chain.stack")
}

/// A recorded stack and the library it ran in, from `tests/data/unwind/`.
fn recorded(library: &str, stack: &str) -> (Vec<procfs::MapEntry>, StackSample) {
    use std::os::unix::fs::MetadataExt;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unwind");
    let lib = dir.join(library);
    let inode = std::fs::metadata(&lib).unwrap().ino();
    let text = std::fs::read_to_string(dir.join(stack)).unwrap();
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
        ip_is_return: false,
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
        ip_is_return: false,
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

/// Check that a frame without CFI that keeps its own data in rbp (as musl's `malloc`
/// internals do) is scanned past, and that its callers, whose CFI finds their frames
/// through rbp, are walked with the rbp it saved on its stack, not the one it left in
/// the register.
#[test]
fn scans_past_frame_without_cfi_with_the_rbp_it_saved() {
    let (maps, sample) = recorded("libfpchain.so", "fpchain.stack");
    let space = AddressSpace::from_maps(std::process::id(), &maps);
    assert!(space.errors().is_empty(), "{:?}", space.errors());
    let unwinder = Unwinder::new(&space, &mut ElfCache::new());
    assert!(unwinder.code.lacks_cfi(sample.ip));
    assert_eq!(sample.bp, 0x5a5a_5a5a, "nocfi_c's own value in rbp");
    let saved_rbp = sample.read_u64(sample.sp).unwrap();
    assert_walks_fpchain(&maps, &sample, saved_rbp);
}

/// Check that where rbp is unknown (a thread blocked before the probes attached: /proc
/// gives sp and pc only) and the frame without CFI did not save it, the callers whose
/// CFI finds their frames through rbp are walked from the frame record just above the
/// scanned return address.
#[test]
fn scans_past_frame_without_cfi_with_rbp_unknown() {
    let (maps, mut sample) = recorded("libfpchain.so", "fpchain.stack");
    let saved_rbp = sample.read_u64(sample.sp).unwrap();
    // nocfi_c's push of rbp becomes junk, and the register is unknown.
    sample.bytes[..8].copy_from_slice(&0x1234u64.to_le_bytes());
    sample.bp = 0;
    assert_walks_fpchain(&maps, &sample, saved_rbp);
}

/// Unwind `sample` of the fpchain fixture: from nocfi_c through fp_b, whose frame
/// pointer must be `fp_b_rbp`, to fp_a.
fn assert_walks_fpchain(maps: &[procfs::MapEntry], sample: &StackSample, fp_b_rbp: u64) {
    let space = AddressSpace::from_maps(std::process::id(), maps);
    let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
    let stack = unwinder.unwind(sample);
    let names = function_names(&space, &stack.frames);
    assert_eq!(names, ["nocfi_c", "fp_b", "fp_a"], "{:x?}", stack.frames);
    assert_eq!(stack.frame_pointers[1], fp_b_rbp, "fp_b's frame pointer");
    // The next return address is in the recorder's main, which the test does not map.
    assert!(stack.truncated);
}

/// Check that a frame whose CFI finds it through rbp, walked with rbp unknown (0), is
/// not taken for the root: its frame record above sp gives rbp and the walk goes on.
#[test]
fn recovers_unknown_rbp_of_frame_pointer_code() {
    let (maps, sample) = recorded("libfpchain.so", "fpchain.stack");
    let space = AddressSpace::from_maps(std::process::id(), &maps);
    let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
    // Start in fp_b just after its call to nocfi_c returned, as a thread whose
    // registers /proc gave (pc and sp, no rbp).
    let ret_b = sample.read_u64(sample.sp + 8).unwrap();
    let sp = sample.sp + 16;
    let skip = (sp - sample.base) as usize;
    let from_b = StackSample {
        ip: ret_b,
        sp,
        bp: 0,
        base: sp,
        bytes: sample.bytes[skip..].to_vec(),
        ret_fix: None,
        ip_is_return: true,
    };
    let stack = unwinder.unwind(&from_b);
    let names = function_names(&space, &stack.frames);
    assert_eq!(names, ["fp_b", "fp_a"], "{:x?}", stack.frames);
    assert_eq!(
        stack.frame_pointers[0],
        sample.read_u64(sample.sp).unwrap(),
        "fp_b's frame pointer"
    );
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

/// Check that registers taken just after a call returned (as the allocator's return
/// probe takes them) unwind from the call: the first frame is the return address
/// minus one, inside the caller, and the callers above follow as in a full walk.
#[test]
fn unwinds_from_a_return_address() {
    let sample = capture_stack_in_known_chain();
    let space = own_space();
    let mut unwinder = Unwinder::new(&space, &mut ElfCache::new());
    let full = unwinder.unwind(&sample);
    // level_c has just returned into level_b: ip is the return address, sp is just
    // above the slot that held it, bp is level_b's.
    let ret = full.frames[1] + 1;
    let slot = (sample.sp..sample.base + sample.bytes.len() as u64)
        .step_by(8)
        .find(|&a| sample.read_u64(a) == Some(ret))
        .expect("the return address into level_b on the stack");
    let returned = StackSample {
        ip: ret,
        sp: slot + 8,
        bp: full.frame_pointers[1],
        ip_is_return: true,
        ..sample.clone()
    };
    let stack = unwinder.unwind(&returned);
    assert_eq!(stack.frames[0], ret - 1);
    assert_eq!(stack.frames[1..], full.frames[2..]);
    let names = function_names(&space, &stack.frames);
    assert!(names[0].ends_with("level_b"), "{names:#?}");
    assert!(names[1].ends_with("level_a"), "{names:#?}");
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
