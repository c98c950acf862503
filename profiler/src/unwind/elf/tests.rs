use super::*;

fn seg(vaddr: u64, offset: u64, filesz: u64, exec: bool) -> LoadSegment {
    LoadSegment {
        vaddr,
        offset,
        filesz,
        exec,
    }
}

/// Check that the bias of a PIE mapping is its start minus the segment's vaddr-offset skew.
#[test]
fn bias_of_pie_segments() {
    // Typical lld/ld layout: r-- at 0, r-x at 0x1000 (file 0x1000), rw- skewed by 0x1000.
    let loads = [
        seg(0, 0, 0x800, false),
        seg(0x1000, 0x1000, 0x3000, true),
        seg(0x5de0, 0x4de0, 0x300, false),
    ];
    let base = 0x5555_0000_0000;
    assert_eq!(load_bias(&loads, base, 0, false), Some(base));
    assert_eq!(load_bias(&loads, base + 0x1000, 0x1000, true), Some(base));
    // The data mapping starts at the page holding 0x4de0, i.e. file offset 0x4000.
    assert_eq!(load_bias(&loads, base + 0x5000, 0x4000, false), Some(base));
}

/// Check that a non-PIE executable (vaddr 0x400000 mapped at 0x400000) has bias zero.
#[test]
fn bias_of_non_pie_executable() {
    let loads = [
        seg(0x40_0000, 0, 0x1000, false),
        seg(0x40_1000, 0x1000, 0x2000, true),
    ];
    assert_eq!(load_bias(&loads, 0x40_1000, 0x1000, true), Some(0));
}

/// Check that an executable mapping prefers the executable segment when two share a page.
#[test]
fn bias_prefers_exec_segment_on_shared_page() {
    // Old single-page layout: r-- segment ends mid-page and r-x starts in the same page,
    // with a different vaddr skew.
    let loads = [seg(0, 0, 0x600, false), seg(0x200600, 0x600, 0x900, true)];
    assert_eq!(
        load_bias(&loads, 0x7000_0000, 0, true),
        Some(0x7000_0000 - 0x200000)
    );
    assert_eq!(load_bias(&loads, 0x7000_0000, 0, false), Some(0x7000_0000));
}

/// Check that an offset outside every PT_LOAD gives no bias.
#[test]
fn bias_of_unknown_offset_is_none() {
    let loads = [seg(0, 0, 0x800, true)];
    assert_eq!(load_bias(&loads, 0x1000, 0x10_0000, true), None);
}

/// Check that an .eh_frame_hdr without a search table is recognised.
#[test]
fn eh_frame_hdr_table_detection() {
    assert!(eh_frame_hdr_has_table(&[1, 0x1b, 0x03, 0x3b, 0, 0, 0, 0]));
    assert!(!eh_frame_hdr_has_table(&[1, 0x1b, 0xff, 0xff]));
    assert!(!eh_frame_hdr_has_table(&[1, 0x1b]));
}

/// Check that the test binary's own headers and CFI sections are read.
#[test]
fn reads_own_executable() {
    let exe = std::env::current_exe().unwrap();
    let name = exe.display().to_string();
    let headers = read_headers(&name, &exe).unwrap();
    assert!(headers.loads.iter().any(|s| s.exec));
    let sections = read_unwind_sections(&name, &exe).unwrap();
    let info = sections.section_info();
    assert!(info.eh_frame.is_some() && info.eh_frame_svma.is_some());
    assert!(info.text_svma.is_some());
}

/// Check that the FDE ranges of the fixture library match what `readelf --debug-dump=frames` lists.
#[test]
fn fde_ranges_of_fixture_library() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unwind/libchain.so");
    let sections = read_unwind_sections("libchain.so", &lib).unwrap();
    // FDEs 0x1000..0x1030 (PLT), then chain_c, chain_b, chain_a up to 0x10a1.
    assert_eq!(
        sections.fde_ranges,
        vec![Range {
            start: 0x1000,
            end: 0x10a1
        }]
    );
    assert!(sections.covers(0x1068) && !sections.covers(0x10a1) && !sections.covers(0xfff));
}

/// Check that garbage is reported as a corrupt ELF, not a panic.
#[test]
fn garbage_is_corrupt() {
    let path = std::env::temp_dir().join(format!("profiler-elf-garbage-{}", std::process::id()));
    std::fs::write(&path, b"\x7fELF\x02\x01\x01 this is not an ELF file at all").unwrap();
    let err = read_headers("/usr/lib/x.so", &path).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert!(
        err.to_string().starts_with("corrupt ELF /usr/lib/x.so: "),
        "{err}"
    );
}
