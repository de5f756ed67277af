//! Compiles `brook/v1/brook.proto` (the client API) and
//! `brook/cluster/v1/raft.proto` (between brokers) with protox (pure Rust,
//! no system `protoc`) and hands the descriptor set to tonic's code
//! generator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["brook/v1/brook.proto", "brook/cluster/v1/raft.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for gRPC server reflection, which shows clients their API only.
    let client_api = protox::compile(["brook/v1/brook.proto"], ["."])?;
    std::fs::write(
        out_dir.join("brook_descriptor.bin"),
        prost::Message::encode_to_vec(&client_api),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
