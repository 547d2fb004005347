//! pubsub-cli (in progress).
