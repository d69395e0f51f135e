//! Compiles `weir/v1/*.proto` into Rust (prost messages, tonic clients and servers)
//! with the vendored `protoc`, so no system protoc is needed, and writes the file
//! descriptor set that `weir_proto::FILE_DESCRIPTOR_SET` embeds (gRPC reflection).

use std::error::Error;
use std::path::PathBuf;

/// The directory holding the `.proto` files, relative to the crate root.
const PROTO_DIR: &str = "weir/v1";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    // Every .proto of the package, sorted so the generated code is reproducible.
    let mut protos: Vec<PathBuf> = std::fs::read_dir(PROTO_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    // No system protoc: use the vendored binary. Build scripts run single-threaded, so
    // setting the variable that prost-build reads is sound.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `bytes` fields (state chunks, Raft payloads) as `bytes::Bytes`: cheap clones
        // and zero-copy slicing when decoding.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("weir_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from(".")])?;
    Ok(())
}
