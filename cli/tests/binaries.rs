//! The binaries start and describe themselves. Also makes `cargo test --workspace`
//! build `pubsubd` and `pubsub` before the end-to-end tests in `tests/` run.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

#[test]
fn both_binaries_print_help() {
    for binary in [env!("CARGO_BIN_EXE_pubsubd"), env!("CARGO_BIN_EXE_pubsub")] {
        let output = Command::new(binary).arg("--help").output().unwrap();
        assert!(output.status.success(), "{binary} --help failed");
    }
}
