//! pubsub-proto: the `pubsub.v1` wire contract shared by every crate that speaks gRPC.
//!
//! - [`v1`]: generated prost messages and tonic clients and servers.
//! - [`ids`]: validated newtypes for topic names and partition ids.
//! - [`topic_config`]: topic setting keys, defaults, bounds, resolve and validate, and
//!   the one parser of `key=value` settings.
//! - [`units`]: sizes and durations as people type and read them.
//! - [`net`]: endpoints, the channel pool, metadata keys and the classification of
//!   failed calls, for every connection.
//! - [`auth`]: tokens, access rules, the layer that identifies every caller, and
//!   the credentials clients send.
//! - [`serve`]: the server builder, the accept loop (plain or TLS) and reflection
//!   every `pubsubd` role uses.
//! - [`tls`]: rustls configuration of listeners and links, reloaded on change.
//! - [`flush`]: a database flush run on tokio's blocking pool, asked again while it
//!   hangs and failed after a deadline, for the services that keep state in sled.
//! - [`codec`]: the gRPC codec of every service (prost's, writing each message
//!   into room reserved for it).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.

pub mod auth;
pub mod codec;
pub mod dial;
pub mod flush;
pub mod ids;
pub mod journal;
mod limits;
pub mod net;
pub mod partitioner;
pub mod serve;
pub mod store_id;
pub mod tls;
pub mod topic_config;
pub mod units;

pub use limits::{Oversize, OversizeLayer, is_oversize, oversize_message};
pub use topic_config::{ConfigError, ConfigKey};

/// Longest status message sent, in bytes: messages echo names a caller sent, and a
/// status travels in HTTP/2 headers, which a 10,000-character name would overflow
/// (the client would then see a transport error instead of the answer).
pub const STATUS_MESSAGE_BYTES_MAX: usize = 512;

/// Cuts a status message to [`STATUS_MESSAGE_BYTES_MAX`] (on a character boundary),
/// marking the cut; every server builds its statuses through this.
pub fn bounded_message(message: String) -> String {
    if message.len() <= STATUS_MESSAGE_BYTES_MAX {
        return message;
    }
    let mut end = STATUS_MESSAGE_BYTES_MAX - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Generated code for package `pubsub.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("pubsub.v1");
}

/// Encoded `FileDescriptorSet` of the pubsub protos, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pubsub_descriptor.bin"));

/// Largest gRPC message either side accepts or sends (tonic's default is 4 MiB).
///
/// A produce request holds batches of at most `max_message_bytes` (1 MiB default),
/// several in one request; a fetch response is bounded by its `max_bytes`. 64 MiB
/// leaves room for both while bounding what one message can make a peer allocate.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// HTTP/2 frame size used on both ends: raising it from 16 KiB doubled fetch
/// throughput on loopback (962 to 2,059 MB/s with 100 KiB batches).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The embedded default listen address of `pubsubd standalone`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9392";

/// Applies the transport rules every pubsub gRPC service follows: gzip and zstd
/// requests accepted (a compressing client otherwise gets UNIMPLEMENTED), and the
/// message limit set deliberately in both directions (tonic's default is 4 MiB).
#[macro_export]
macro_rules! with_limits {
    ($service:expr) => {
        $service
            .accept_compressed(::tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(::tonic::codec::CompressionEncoding::Zstd)
            .max_decoding_message_size($crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::MAX_MESSAGE_BYTES)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use prost::Message;
    use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

    /// Field numbers of `FileDescriptorProto`, `DescriptorProto`,
    /// `EnumDescriptorProto` and `ServiceDescriptorProto` that make up
    /// `SourceCodeInfo.Location.path`.
    const FILE_MESSAGE: i32 = 4;
    const FILE_ENUM: i32 = 5;
    const FILE_SERVICE: i32 = 6;
    const MESSAGE_FIELD: i32 = 2;
    const MESSAGE_NESTED: i32 = 3;
    const MESSAGE_ENUM: i32 = 4;
    const MESSAGE_ONEOF: i32 = 8;
    const ENUM_VALUE: i32 = 2;
    const SERVICE_METHOD: i32 = 2;

    /// Walks the descriptors of every file in `set` and names each service, method,
    /// message, field, oneof, enum and enum value without a non-empty leading comment.
    fn undocumented(set: &FileDescriptorSet) -> Vec<String> {
        let mut missing = Vec::new();
        for file in &set.file {
            let comments: HashMap<&[i32], &str> = file
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .filter_map(|l| Some((l.path.as_slice(), l.leading_comments.as_deref()?)))
                .collect();
            let mut check = |path: &[i32], name: String| {
                if comments.get(path).is_none_or(|c| c.trim().is_empty()) {
                    missing.push(name);
                }
            };
            let package = file.package();
            for (i, message) in file.message_type.iter().enumerate() {
                let path = [FILE_MESSAGE, i as i32];
                walk_message(message, &path, package, &mut check);
            }
            for (i, enumeration) in file.enum_type.iter().enumerate() {
                walk_enum(enumeration, &[FILE_ENUM, i as i32], package, &mut check);
            }
            for (i, service) in file.service.iter().enumerate() {
                let path = [FILE_SERVICE, i as i32];
                let name = format!("{package}.{}", service.name());
                for (j, method) in service.method.iter().enumerate() {
                    let method_path = [FILE_SERVICE, i as i32, SERVICE_METHOD, j as i32];
                    check(&method_path, format!("{name}.{}", method.name()));
                }
                check(&path, name);
            }
        }
        missing.sort();
        missing
    }

    fn walk_message(
        message: &DescriptorProto,
        path: &[i32],
        scope: &str,
        check: &mut impl FnMut(&[i32], String),
    ) {
        let name = format!("{scope}.{}", message.name());
        let child = |kind: i32, index: usize| [path, &[kind, index as i32]].concat();
        for (j, field) in message.field.iter().enumerate() {
            check(&child(MESSAGE_FIELD, j), format!("{name}.{}", field.name()));
        }
        for (j, oneof) in message.oneof_decl.iter().enumerate() {
            // A proto3 `optional` field gets a synthetic oneof that has no source of
            // its own to comment; the field's comment covers it.
            let synthetic = message
                .field
                .iter()
                .any(|f| f.oneof_index == Some(j as i32) && f.proto3_optional());
            if !synthetic {
                check(&child(MESSAGE_ONEOF, j), format!("{name}.{}", oneof.name()));
            }
        }
        for (j, nested) in message.nested_type.iter().enumerate() {
            walk_message(nested, &child(MESSAGE_NESTED, j), &name, check);
        }
        for (j, enumeration) in message.enum_type.iter().enumerate() {
            walk_enum(enumeration, &child(MESSAGE_ENUM, j), &name, check);
        }
        check(path, name);
    }

    fn walk_enum(
        enumeration: &EnumDescriptorProto,
        path: &[i32],
        scope: &str,
        check: &mut impl FnMut(&[i32], String),
    ) {
        let name = format!("{scope}.{}", enumeration.name());
        for (j, value) in enumeration.value.iter().enumerate() {
            let value_path = [path, &[ENUM_VALUE, j as i32]].concat();
            check(&value_path, format!("{name}.{}", value.name()));
        }
        check(path, name);
    }

    #[test]
    fn every_proto_element_has_a_leading_comment() {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let files: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for expected in ["pubsub.proto", "cluster.proto", "consumer.proto"] {
            assert!(
                files.iter().any(|f| f.ends_with(expected)),
                "{expected} is missing from the descriptor set: {files:?}"
            );
        }
        assert!(
            set.file.iter().all(|f| f.source_code_info.is_some()),
            "the descriptor set has no source info, so comments cannot be checked"
        );
        let missing = undocumented(&set);
        assert!(
            missing.is_empty(),
            "{} proto elements have no leading comment; clients in other languages \
             have only the .proto files to go by:\n  {}",
            missing.len(),
            missing.join("\n  ")
        );
    }

    #[test]
    fn an_element_without_a_comment_is_named() {
        let set = FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                package: Some("p".into()),
                message_type: vec![DescriptorProto {
                    name: Some("M".into()),
                    field: vec![prost_types::FieldDescriptorProto {
                        name: Some("f".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                source_code_info: Some(prost_types::SourceCodeInfo {
                    location: vec![prost_types::source_code_info::Location {
                        path: vec![FILE_MESSAGE, 0],
                        leading_comments: Some(" A message.\n".into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }],
        };
        assert_eq!(undocumented(&set), ["p.M.f"]);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(10_000);
        let cut = bounded_message(long);
        assert!(cut.len() <= STATUS_MESSAGE_BYTES_MAX);
        assert!(cut.ends_with("..."));
        assert_eq!(bounded_message("short".into()), "short");
    }
}
