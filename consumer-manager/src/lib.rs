//! The consumer manager: subscriptions, consumer groups, committed offsets in sled, push delivery, presence and authorization; built in issue 6.
