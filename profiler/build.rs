//! Builds the eBPF object (`profiler-ebpf`) with the nightly toolchain and bpf-linker,
//! so that `include_bytes_aligned!` in `collect` embeds it into the binary.
fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiler-ebpf");
    println!("cargo:rerun-if-changed=../profiler-common/src");
    let package = aya_build::Package {
        name: "profiler-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
