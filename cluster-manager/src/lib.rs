//! The cluster manager: the Raft group (openraft) that will own cluster metadata (brokers, topics, partition leaders, in-sync replicas, ACLs); built in issue 4.
