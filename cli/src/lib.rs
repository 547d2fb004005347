//! pubsub-cli: the `pubsubd` server binary and the `pubsub` command-line client.
//!
//! - `server`: configuration and startup of `pubsubd` roles.
//! - `commands`: the `pubsub` subcommands, each a thin layer over the client SDK.

pub mod bench;
pub mod commands;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod security;
pub mod server;
