//! `pubsub`: the command-line client (being written).

fn main() {}
