//! pubsub-proto (in progress).
