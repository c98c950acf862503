//! Whether the probes can size a block from the allocator's own header, so that a
//! `free` of a block they did not see allocated still counts its bytes.
//!
//! glibc keeps a size word before every chunk. musl's mallocng (1.2.1 and later) keeps
//! a 4-byte in-band header that leads to the slot's size class and reserved bytes; the
//! kernel side computes the nominal size with musl's `size_classes` table, so a musl is
//! trusted only when its binary holds that very table. jemalloc, tcmalloc and mimalloc
//! keep sizes in side structures (radix trees, page maps) that a probe cannot walk: their
//! frees are counted but not sized, and the verdict says so.
use profiler_common::{heap_layout, MUSL_SIZE_CLASSES};

use super::AllocatorFamily;

/// What the kernel side can read, as `profiler_common::heap_layout`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapLayout {
    /// No header the probes can read.
    #[default]
    None,
    Glibc,
    MuslMallocng,
}

impl HeapLayout {
    /// The value the kernel side expects.
    pub fn code(self) -> u32 {
        match self {
            Self::None => heap_layout::NONE,
            Self::Glibc => heap_layout::GLIBC,
            Self::MuslMallocng => heap_layout::MUSL_MALLOCNG,
        }
    }

    /// How frees of blocks not seen allocated are sized, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::None => "not sized (this allocator keeps no size next to a block)",
            Self::Glibc => "sized from glibc's chunk header",
            Self::MuslMallocng => "sized from musl mallocng's slot header",
        }
    }
}

/// The layout of an allocator of `family` whose binary is `image`. `defines` says
/// whether the binary defines a symbol (for allocators inside an executable).
pub fn layout_of(
    family: AllocatorFamily,
    image: &[u8],
    defines: &mut dyn FnMut(&str) -> bool,
) -> HeapLayout {
    match family {
        AllocatorFamily::Glibc => HeapLayout::Glibc,
        AllocatorFamily::Musl if holds_musl_size_classes(image) => HeapLayout::MuslMallocng,
        AllocatorFamily::Executable | AllocatorFamily::Custom => {
            if holds_musl_size_classes(image) {
                HeapLayout::MuslMallocng
            } else if defines("_int_malloc") || defines("__libc_malloc") {
                HeapLayout::Glibc
            } else {
                HeapLayout::None
            }
        }
        _ => HeapLayout::None,
    }
}

/// One layout for a process probed in several binaries: only when they all agree (a
/// header read with the wrong layout would be garbage).
pub fn common_layout(layouts: &[HeapLayout]) -> HeapLayout {
    match layouts.split_first() {
        Some((first, rest)) if rest.iter().all(|l| l == first) => *first,
        _ => HeapLayout::None,
    }
}

/// Whether `image` contains musl mallocng's `size_classes` table as the kernel side
/// knows it (48 little-endian `u16`s).
pub fn holds_musl_size_classes(image: &[u8]) -> bool {
    let table: Vec<u8> = MUSL_SIZE_CLASSES
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    image.windows(table.len()).any(|w| w == table.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_bytes() -> Vec<u8> {
        MUSL_SIZE_CLASSES
            .iter()
            .flat_map(|c| c.to_le_bytes())
            .collect()
    }

    /// Check that musl is trusted only with the table the kernel side uses.
    #[test]
    fn musl_needs_its_table() {
        let mut image = vec![0u8; 100];
        image.extend(table_bytes());
        image.extend([1, 2, 3]);
        let mut none = |_: &str| false;
        assert_eq!(
            layout_of(AllocatorFamily::Musl, &image, &mut none),
            HeapLayout::MuslMallocng
        );
        let mut other = table_bytes();
        other[13 * 2] = 21; // a fork with another class 13
        assert_eq!(
            layout_of(AllocatorFamily::Musl, &other, &mut none),
            HeapLayout::None
        );
        assert_eq!(
            layout_of(AllocatorFamily::Executable, &image, &mut none),
            HeapLayout::MuslMallocng
        );
    }

    /// Check glibc, static glibc, and the allocators without headers.
    #[test]
    fn glibc_and_headerless_allocators() {
        let mut none = |_: &str| false;
        let mut glibc = |s: &str| s == "_int_malloc";
        assert_eq!(
            layout_of(AllocatorFamily::Glibc, &[], &mut none),
            HeapLayout::Glibc
        );
        assert_eq!(
            layout_of(AllocatorFamily::Executable, &[], &mut glibc),
            HeapLayout::Glibc
        );
        for family in [
            AllocatorFamily::Jemalloc,
            AllocatorFamily::Tcmalloc,
            AllocatorFamily::Mimalloc,
        ] {
            assert_eq!(layout_of(family, &[], &mut glibc), HeapLayout::None);
        }
        assert_eq!(
            common_layout(&[HeapLayout::Glibc, HeapLayout::Glibc]),
            HeapLayout::Glibc
        );
        assert_eq!(
            common_layout(&[HeapLayout::None, HeapLayout::Glibc]),
            HeapLayout::None
        );
        assert_eq!(common_layout(&[]), HeapLayout::None);
    }

    /// Check against the musl on this machine, when there is one.
    #[test]
    fn debian_musl_holds_the_table() {
        let path = "/usr/lib/x86_64-linux-musl/libc.so";
        let Ok(image) = std::fs::read(path) else {
            eprintln!("skipped: no {path}");
            return;
        };
        assert!(holds_musl_size_classes(&image));
    }
}
