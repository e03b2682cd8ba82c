//! The krew binary must build for macOS: the cluster side links no libbpf.
//! (This machine has no macOS standard library to compile against, so the
//! check is on cargo's resolved dependency graph for that target.)

use std::process::Command;

fn tree_for(target: &str, package: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--target", target, "-e", "normal", "-i", package])
        .output()
        .expect("run cargo tree");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn macos_builds_link_no_bpf_but_do_have_the_kube_client() {
    for target in ["aarch64-apple-darwin", "x86_64-apple-darwin"] {
        for linux_only in ["libbpf-rs", "libbpf-sys"] {
            let (_, text) = tree_for(target, linux_only);
            assert!(
                !text.contains(&format!("{linux_only} v")),
                "{target} would link {linux_only}:\n{text}"
            );
        }
        let (ok, text) = tree_for(target, "kube");
        assert!(
            ok && text.contains("kube v"),
            "{target} lacks the kube client:\n{text}"
        );
    }
    // The check can fail: on Linux the same graph does hold libbpf-rs.
    let (ok, text) = tree_for("x86_64-unknown-linux-gnu", "libbpf-rs");
    assert!(ok && text.contains("libbpf-rs v"), "{text}");
}
