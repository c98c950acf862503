//! Builds the eBPF object (`profiler-ebpf`) with the nightly toolchain and bpf-linker,
//! so that `include_bytes_aligned!` in `collect` embeds it into the binary.
fn main() -> anyhow::Result<()> {
    // Fuzz builds (`--cfg fuzzing`, set by cargo-fuzz) exercise the pure parsers only and
    // never load the eBPF object: an empty one spares them a second nightly `build-std`
    // build of the eBPF crate, which on CI is about a gigabyte of disk.
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("profiler");
        std::fs::write(out, [])?;
        return Ok(());
    }
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
