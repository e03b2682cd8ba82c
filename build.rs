//! Compiles bpf/*.bpf.c into libbpf-rs skeletons (Linux only: the cluster
//! client must build on macOS and Windows too, where there is no BPF).

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    #[cfg(target_os = "linux")]
    linux::build_skeletons();
}

#[cfg(target_os = "linux")]
mod linux {
    use libbpf_cargo::SkeletonBuilder;
    use std::path::PathBuf;

    pub fn build_skeletons() {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
            return;
        }
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let mut sources: Vec<PathBuf> = std::fs::read_dir("bpf")
            .expect("bpf/ holds the BPF sources")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
            .collect();
        sources.sort();
        for src in sources {
            let stem = src
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".bpf.c"))
                .expect("a .bpf.c file name")
                .to_string();
            SkeletonBuilder::new()
                .source(&src)
                // Kept where the unit tests read its BTF (src/agent/abi.rs).
                .obj(out.join(format!("{stem}.bpf.o")))
                .clang_args(["-O2", "-g", "-Wall", "-mcpu=v3", "-Ibpf"])
                .build_and_generate(out.join(format!("{stem}.skel.rs")))
                .unwrap_or_else(|e| {
                    panic!(
                        "compiling {}: {e:#}\n(needs clang and the libbpf headers: apt-get install clang libbpf-dev)",
                        src.display()
                    )
                });
        }
    }
}
