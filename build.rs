//! Compiles the order API in `proto/` with protox, a protobuf compiler written in Rust, so that building needs no
//! `protoc` on the machine. The descriptor set is kept for gRPC server reflection.

use protox::prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["ordertrail/v1/orders.proto", "ordertrail/v1/insight.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ordertrail_v1_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
