//! Generates the push contract's Rust types and gRPC client from
//! `proto/turnbase/push/v1/push.proto` with protox, so no `protoc` binary
//! is needed. The server side is written by hand (see `src/server.rs`) so
//! that events encoded once can be sent to every subscriber as bytes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: cargo reuses a
    // compiled build script for a checkout at another path (a build cache
    // shared between clones), and a path baked in would be the old one's.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("turnbase/push/v1/push.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .bytes(".turnbase.push.v1.ClientEvent.payload")
        .compile_fds(descriptors)?;
    Ok(())
}
