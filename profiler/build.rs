//! Builds the eBPF object (`profiler-ebpf`) with the nightly toolchain and bpf-linker,
//! so that `include_bytes_aligned!` in `collect` embeds it into the binary.
fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiler-ebpf");
    println!("cargo:rerun-if-changed=../profiler-common/src");
    // Relative, like the line above: aya-build's own line is the absolute path this
    // script was compiled at, which a target directory copied from another checkout
    // still points at (its eBPF changes then went unbuilt here).
    println!("cargo:rerun-if-changed=../profiler-ebpf/src");
    let package = aya_build::Package {
        name: "profiler-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
