//! docs/api.md, the gRPC API reference, is generated from the comments in `proto/`
//! (the descriptor set the binaries serve by reflection, which keeps its source info),
//! so it cannot drift: this test renders it and fails if the file differs. Run it with
//! `PUBSUB_UPDATE_DOCS=1` to rewrite the file after changing a `.proto`.

use prost::Message;
use prost_types::source_code_info::Location;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

const HEADER: &str = "# gRPC API reference

Every service, method and message of package `pubsub.v1`, with the comments of the
`.proto` files in `proto/proto/pubsub/v1/`, which are the contract. Servers also serve
gRPC reflection, so `grpcurl -plaintext 127.0.0.1:9392 list` shows the same services.
Which role serves which service: ARCHITECTURE.md.

This file is generated: `PUBSUB_UPDATE_DOCS=1 cargo test -p pubsub-tests --test e2e
api_docs::` rewrites it, and CI fails when it is out of date.
";

// Field numbers of descriptor.proto, which source-info paths are made of.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const FILE_SYNTAX: i32 = 12;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// The comments of one file, looked up by source path.
struct Comments<'a>(&'a [Location]);

impl Comments<'_> {
    fn leading(&self, path: &[i32]) -> String {
        self.0
            .iter()
            .find(|l| l.path == path)
            .and_then(|l| l.leading_comments.as_deref())
            .map(tidy)
            .unwrap_or_default()
    }

    fn detached(&self, path: &[i32]) -> String {
        self.0
            .iter()
            .find(|l| l.path == path)
            .map(|l| {
                let parts: Vec<String> = l
                    .leading_detached_comments
                    .iter()
                    .map(|c| tidy(c))
                    .collect();
                parts.join("\n\n")
            })
            .unwrap_or_default()
    }
}

/// A comment as Markdown text: one leading space per line removed, trimmed.
fn tidy(comment: &str) -> String {
    comment
        .lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

fn paragraph(out: &mut String, text: &str) {
    if !text.is_empty() {
        out.push_str(text);
        out.push_str("\n\n");
    }
}

fn short_type(name: &str) -> &str {
    name.strip_prefix(".pubsub.v1.").unwrap_or(name)
}

fn field_type(field: &FieldDescriptorProto) -> String {
    let base = match field.r#type() {
        Type::Message | Type::Enum => short_type(field.type_name()).to_string(),
        other => other
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    };
    match (field.label(), field.proto3_optional()) {
        (Label::Repeated, _) => format!("repeated {base}"),
        (_, true) => format!("optional {base}"),
        _ => base,
    }
}

/// A comment inside a Markdown table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn render_enum(
    out: &mut String,
    comments: &Comments,
    name: &str,
    e: &EnumDescriptorProto,
    path: &[i32],
) {
    out.push_str(&format!("### enum `{name}`\n\n"));
    paragraph(out, &comments.leading(path));
    out.push_str("| value | number | description |\n|---|---|---|\n");
    for (i, value) in e.value.iter().enumerate() {
        let value_path = [path, &[ENUM_VALUE, i as i32]].concat();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            value.name(),
            value.number(),
            cell(&comments.leading(&value_path))
        ));
    }
    out.push('\n');
}

fn render_message(
    out: &mut String,
    comments: &Comments,
    prefix: &str,
    m: &DescriptorProto,
    path: &[i32],
) {
    let name = format!("{prefix}{}", m.name());
    out.push_str(&format!("### `{name}`\n\n"));
    paragraph(out, &comments.leading(path));
    if !m.field.is_empty() {
        out.push_str("| field | type | description |\n|---|---|---|\n");
        for (i, field) in m.field.iter().enumerate() {
            let field_path = [path, &[MESSAGE_FIELD, i as i32]].concat();
            out.push_str(&format!(
                "| `{}` = {} | `{}` | {} |\n",
                field.name(),
                field.number(),
                field_type(field),
                cell(&comments.leading(&field_path))
            ));
        }
        out.push('\n');
    }
    for (i, nested) in m.nested_type.iter().enumerate() {
        if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let nested_path = [path, &[MESSAGE_NESTED, i as i32]].concat();
        render_message(out, comments, &format!("{name}."), nested, &nested_path);
    }
    for (i, e) in m.enum_type.iter().enumerate() {
        let enum_path = [path, &[MESSAGE_ENUM, i as i32]].concat();
        render_enum(
            out,
            comments,
            &format!("{name}.{}", e.name()),
            e,
            &enum_path,
        );
    }
}

fn render_file(out: &mut String, file: &FileDescriptorProto) {
    let locations = file
        .source_code_info
        .as_ref()
        .map(|info| info.location.as_slice())
        .unwrap_or_default();
    let comments = Comments(locations);
    out.push_str(&format!("\n## {}\n\n", file.name()));
    // The file's opening comment, whether a blank line parts it from `syntax` or not.
    paragraph(out, &comments.detached(&[FILE_SYNTAX]));
    paragraph(out, &comments.leading(&[FILE_SYNTAX]));
    for (i, service) in file.service.iter().enumerate() {
        out.push_str(&format!("### service `{}`\n\n", service.name()));
        paragraph(out, &comments.leading(&[FILE_SERVICE, i as i32]));
        for (j, method) in service.method.iter().enumerate() {
            let stream = |yes: bool| if yes { "stream " } else { "" };
            out.push_str(&format!(
                "#### `{}({}{}) returns ({}{})`\n\n",
                method.name(),
                stream(method.client_streaming()),
                short_type(method.input_type()),
                stream(method.server_streaming()),
                short_type(method.output_type()),
            ));
            paragraph(
                out,
                &comments.leading(&[FILE_SERVICE, i as i32, SERVICE_METHOD, j as i32]),
            );
        }
    }
    for (i, message) in file.message_type.iter().enumerate() {
        render_message(out, &comments, "", message, &[FILE_MESSAGE, i as i32]);
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        render_enum(out, &comments, e.name(), e, &[FILE_ENUM, i as i32]);
    }
}

#[test]
fn api_md_matches_the_protos() {
    let set = FileDescriptorSet::decode(pubsub_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut doc = HEADER.to_string();
    let ours = set.file.iter().filter(|f| f.package() == "pubsub.v1");
    for file in ours {
        assert!(
            file.source_code_info.is_some(),
            "{} has no source info: the descriptor set lost the comments",
            file.name()
        );
        render_file(&mut doc, file);
    }
    let doc = format!("{}\n", doc.trim_end());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    if std::env::var_os("PUBSUB_UPDATE_DOCS").is_some() {
        std::fs::write(path, &doc).unwrap();
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == doc,
        "docs/api.md is out of date: run PUBSUB_UPDATE_DOCS=1 cargo test -p pubsub-tests --test e2e api_docs::"
    );
}
