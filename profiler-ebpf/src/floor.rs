//! The bench's floor: `profiler record --empty-programs` (a hidden flag) loads every
//! program with `EMPTY_PROGRAMS` set, and each one returns at its entry. The attach
//! points, ring buffer and maps stay those of a plain `record`, so what the traced
//! process then pays is the kernel's own price for the tracepoints and uprobes
//! (`cargo xtask bench`'s "floor" column), against which the programs' work is judged.
//!
//! Every program entry point starts with [`empty_programs`]; a new program must too (the
//! root test `kernel_features::empty_programs_are_empty` fails otherwise).

/// Written by userspace before loading (`EbpfLoader::override_global`). It lives in
/// frozen read-only data, so the verifier knows its value: with 1 it drops each
/// program's body, with 0 (every real recording) the check itself.
#[unsafe(no_mangle)]
static EMPTY_PROGRAMS: u32 = 0;

/// Whether the programs were loaded empty (the bench's floor).
#[inline(always)]
pub fn empty_programs() -> bool {
    // SAFETY: a plain read of frozen read-only data.
    unsafe { core::ptr::read_volatile(&EMPTY_PROGRAMS) != 0 }
}
