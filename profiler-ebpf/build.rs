//! Tell cargo to rebuild the eBPF object when bpf-linker changes.
fn main() {
    if let Ok(path) = which_bpf_linker() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn which_bpf_linker() -> Result<String, ()> {
    let path = std::env::var("PATH").map_err(|_| ())?;
    for dir in path.split(':') {
        let candidate = format!("{dir}/bpf-linker");
        if std::path::Path::new(&candidate).exists() {
            return Ok(candidate);
        }
    }
    Err(())
}
