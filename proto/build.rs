//! Compiles the .proto files with protox (pure Rust, no system protoc) and writes the
//! descriptor set that server reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/pubsub/v1/pubsub.proto",
        "proto/pubsub/v1/cluster.proto",
        "proto/pubsub/v1/consumer.proto",
        "proto/pubsub/v1/access.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pubsub_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".pubsub.v1")
        // Prost's encoding, writing each message into room reserved for it (see
        // `src/codec.rs`).
        .codec_path("crate::codec::Codec")
        // The cluster manager keeps topic configs in its Raft log and snapshots (JSON);
        // the field names are those its state used before, so old entries still read.
        .type_attribute(
            ".pubsub.v1.TopicConfig",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
