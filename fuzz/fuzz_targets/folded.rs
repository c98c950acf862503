//! Folded files come from users (`profiler diff A B`, possibly someone else's capture):
//! parsing lines and merging two profiles must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::render::{diff, folded};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Before and after, separated by the first NUL (or all of it twice).
    let (before, after) = text.split_once('\0').unwrap_or((text, text));
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| folded::parse_line(l).is_some())
            .map(str::to_string)
            .collect()
    };
    let _ = diff::differential_lines(&lines(before), &lines(after));
});
