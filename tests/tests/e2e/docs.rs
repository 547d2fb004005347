//! docs/configuration.md is generated from the binaries' own `--help` (clap), so it
//! cannot drift: this test regenerates it and fails if the file differs. Run it with
//! `PUBSUB_UPDATE_DOCS=1` to rewrite the file after changing a flag.

use std::process::Command;

use pubsub_tests::binary;

const HEADER: &str = "# Configuration

Every flag of every `pubsubd` role and of the `pubsub` CLI, with its `PUBSUB_*`
environment variable and default, as the binaries print them (`--help`). Flags win
over environment variables; for `pubsubd standalone`, both win over the TOML file of
`--config` (keys `data_dir`, `listen`, `advertised_address`; see
`cli/config.example.toml`). The log level comes from `RUST_LOG` (default
`info,openraft=warn`), for example `RUST_LOG=debug` or
`RUST_LOG=info,pubsub_broker=debug`.

This file is generated: `PUBSUB_UPDATE_DOCS=1 cargo test -p pubsub-tests --test e2e
docs::` rewrites it, and CI fails when it is out of date.
";

fn help(binary_name: &str, args: &[&str]) -> String {
    let out = Command::new(binary(binary_name))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{binary_name} {args:?} --help failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

fn section(out: &mut String, title: &str, binary_name: &str, args: &[&str]) {
    out.push_str(&format!(
        "\n## `{title}`\n\n```text\n{}\n```\n",
        help(binary_name, args)
    ));
}

#[test]
fn configuration_md_matches_the_binaries() {
    let mut doc = HEADER.to_string();
    for role in [
        "standalone",
        "cluster-manager",
        "broker",
        "consumer-manager",
    ] {
        section(&mut doc, &format!("pubsubd {role}"), "pubsubd", &[role]);
    }
    section(&mut doc, "pubsub", "pubsub", &[]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    if std::env::var_os("PUBSUB_UPDATE_DOCS").is_some() {
        std::fs::write(path, &doc).unwrap();
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == doc,
        "docs/configuration.md is out of date: run PUBSUB_UPDATE_DOCS=1 cargo test -p pubsub-tests --test e2e docs::"
    );
}
