//! A perf map is written by the target (any JIT, or anyone who can write its `/tmp`):
//! parsing, appending in pieces and lookups must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::symbolize::perf_map::PerfMap;

fuzz_target!(|data: &[u8]| {
    let whole = PerfMap::parse(data);
    // The same bytes arriving in two reads, split anywhere (a runtime mid-write).
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut pieces = PerfMap::default();
    let taken = pieces.extend(&data[..split]);
    pieces.extend(&data[taken..]);
    assert_eq!(whole.lines(), pieces.lines());
    for addr in [0, 1, 0x1000, 0x7fff_ffff_f000, u64::MAX - 1, u64::MAX] {
        assert_eq!(whole.lookup(addr), pieces.lookup(addr));
    }
});
