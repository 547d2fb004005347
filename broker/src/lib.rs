//! pubsub-broker (in progress).
