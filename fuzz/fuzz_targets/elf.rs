//! ELF files behind a target's mappings are the target's to choose: reading their
//! program headers, build ID and CFI sections must never panic on a corrupt file.
#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;
use profiler::unwind::{read_headers, read_unwind_sections};

fuzz_target!(|data: &[u8]| {
    // The readers take files (they read lazily, never a whole library): one per process.
    let path = std::env::temp_dir().join(format!("profiler-fuzz-elf-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("temp file");
    file.write_all(data).expect("temp file");
    drop(file);
    let _ = read_headers("fuzz", &path);
    if let Ok(sections) = read_unwind_sections("fuzz", &path) {
        for svma in [0, 0x1000, u64::MAX] {
            let _ = sections.covers(svma);
        }
    }
    let _ = profiler::allocator::detect::elf_defines(&path, "malloc");
});
