//! pubsub-client (in progress).
