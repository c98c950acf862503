//! Recorded process memory for tests of the heap walk: `tests/data/v8/*.image` holds
//! the bytes a walk read from a live node process, so the walk is tested with no
//! process at all.
//!
//! Format, one item per line: `function <tagged address>` (the JSFunction the image was
//! recorded for), `expect <frame name>`, `mem <address> <hex bytes>`; `#` comments.
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct MemoryImage {
    pub function: u64,
    pub expect: String,
    pub chunks: BTreeMap<u64, Vec<u8>>,
}

impl MemoryImage {
    pub fn parse(text: &str) -> Self {
        let mut image = Self::default();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("function", v)) => image.function = hex(v),
                Some(("expect", v)) => image.expect = v.to_string(),
                Some(("mem", rest)) => {
                    let (addr, data) = rest.split_once(' ').unwrap();
                    let bytes = (0..data.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&data[i..i + 2], 16).unwrap())
                        .collect();
                    image.insert(hex(addr), bytes);
                }
                _ => {}
            }
        }
        image
    }

    pub fn insert(&mut self, addr: u64, bytes: Vec<u8>) {
        self.chunks.insert(addr, bytes);
    }

    /// Read `buf.len()` bytes at `addr` if one recorded chunk holds them all.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some((&start, bytes)) = self.chunks.range(..=addr).next_back() else {
            return false;
        };
        let off = (addr - start) as usize;
        match bytes.get(off..off + buf.len()) {
            Some(b) => {
                buf.copy_from_slice(b);
                true
            }
            None => false,
        }
    }

    /// An image of the reads a walk made, `(address, bytes)` in any order: overlapping
    /// and adjacent reads are merged into one chunk (the first read of a byte wins), so
    /// that any read the walk makes again finds one chunk holding it all.
    pub fn from_reads(mut reads: Vec<(u64, Vec<u8>)>) -> Self {
        reads.sort_by_key(|(a, _)| *a);
        let mut image = Self::default();
        let mut current: Option<(u64, Vec<u8>)> = None;
        for (addr, bytes) in reads {
            match &mut current {
                Some((start, data)) if addr <= *start + data.len() as u64 => {
                    let end = *start + data.len() as u64;
                    let skip = (end - addr) as usize;
                    if skip < bytes.len() {
                        data.extend_from_slice(&bytes[skip..]);
                    }
                }
                _ => {
                    if let Some((start, data)) = current.take() {
                        image.insert(start, data);
                    }
                    current = Some((addr, bytes));
                }
            }
        }
        if let Some((start, data)) = current {
            image.insert(start, data);
        }
        image
    }

    /// Change recorded bytes (tests of moved or freed objects).
    pub fn patch(&mut self, addr: u64, new: &[u8]) {
        let (&start, bytes) = self.chunks.range_mut(..=addr).next_back().unwrap();
        let off = (addr - start) as usize;
        bytes[off..off + new.len()].copy_from_slice(new);
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("function {:#x}\nexpect {}\n", self.function, self.expect);
        for (addr, bytes) in &self.chunks {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!("mem {addr:#x} {hex}\n"));
        }
        out
    }
}
