//! Compiles the protobufs with protox (pure Rust), so no system `protoc` is needed, and writes
//! the descriptor set that gRPC server reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "tollgate/policy/v1/policy.proto",
    "tollgate/admin/v1/admin.proto",
    "tollgate/usage/v1/usage.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tollgate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // Messages serialise to JSON for the CLI (`--output json`); timestamps as RFC 3339 text.
    let mut config =
        tonic_prost_build::configure().type_attribute(".tollgate", "#[derive(serde::Serialize)]");
    for file in &descriptors.file {
        for message in &file.message_type {
            for field in &message.field {
                if field.type_name() == ".google.protobuf.Timestamp" {
                    let path = format!(".{}.{}.{}", file.package(), message.name(), field.name());
                    config = config.field_attribute(
                        path,
                        "#[serde(serialize_with = \"crate::json::timestamp\")]",
                    );
                }
            }
        }
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
