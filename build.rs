//! Compiles `proto/turbomon/v1/*.proto` with protox, so no system `protoc` is needed, keeps the
//! encoded descriptor set for the engine's gRPC server reflection, compiles the client of the
//! etcd v3 subset in `proto/etcd` (the supervisor cluster's store), and records the git revision
//! for `--version` (`unknown` outside a git checkout).

use std::process::Command;

use prost::Message;

/// `git` with `args` in the crate's directory, its trimmed output when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/turbomon/v1/engine.proto"];
    println!("cargo:rerun-if-changed=proto");
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TURBOMON_GIT_REVISION={revision}");
    // A new commit or checkout moves HEAD (its reflog grows): build the revision again then.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        for file in ["HEAD", "logs/HEAD"] {
            let path = std::path::Path::new(&git_dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("turbomon_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    let etcd = protox::compile(["proto/etcd/etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(etcd)?;
    Ok(())
}
