//! Seek: moves a subscription's positions (all partitions or one) to an offset, the
//! earliest or latest record, or a time. The targets are asked of the partition
//! leaders first; then one [`Command::Seek`] resets the positions under the lock.

use pubsub_proto::v1;
use v1::list_offsets_request::Spec;

use crate::command::{Command, apply, no_such_partition};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::subscription::Subscription;

impl Manager {
    /// Moves a subscription's position (all partitions or one).
    pub async fn seek(
        &self,
        name: &str,
        partition: Option<u32>,
        target: v1::seek_request::Target,
    ) -> Result<Vec<v1::PartitionLag>> {
        let subscription = self.subscription(name)?;
        let partitions: Vec<u32> = match partition {
            Some(p) if p < subscription.partitions() => vec![p],
            Some(p) => return Err(no_such_partition(&subscription, p)),
            None => (0..subscription.partitions()).collect(),
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            offsets.push((p, self.seek_target(&subscription, p, target).await?));
        }
        let command = Command::Seek {
            offsets: offsets.clone(),
        };
        self.write(&subscription, |state, writes| {
            let applied = apply(&subscription, state, command)?;
            writes.applied(&state.cursors, &applied)
        })
        .await?;
        subscription.changed.notify_waiters();
        Ok(offsets
            .into_iter()
            .map(|(p, offset)| v1::PartitionLag {
                partition: p,
                committed_offset: offset,
                ..Default::default()
            })
            .collect())
    }

    /// The offset of partition `p` a seek to `target` moves to, asked of its leader;
    /// an explicit offset must lie within what the partition holds.
    async fn seek_target(
        &self,
        subscription: &Subscription,
        p: u32,
        target: v1::seek_request::Target,
    ) -> Result<u64> {
        let topic = &subscription.topic;
        let offset = match target {
            v1::seek_request::Target::Offset(o) => {
                let start = self.source().offset(topic, p, Spec::Earliest(true)).await?;
                let end = self.source().offset(topic, p, Spec::Latest(true)).await?;
                if !(start..=end).contains(&o) {
                    return Err(Error::SeekOutOfRange {
                        partition: p,
                        offset: o,
                        start,
                        end,
                    });
                }
                o
            }
            v1::seek_request::Target::Earliest(false) | v1::seek_request::Target::Latest(false) => {
                return Err(Error::InvalidOption {
                    option: "seek earliest or latest",
                    got: "false".into(),
                    rule: "must be true when set",
                });
            }
            v1::seek_request::Target::Earliest(true) => {
                self.source().offset(topic, p, Spec::Earliest(true)).await?
            }
            v1::seek_request::Target::Latest(true) => {
                self.source().offset(topic, p, Spec::Latest(true)).await?
            }
            v1::seek_request::Target::TimestampMs(ts) => {
                self.source()
                    .offset(topic, p, Spec::TimestampMs(ts))
                    .await?
            }
        };
        Ok(offset)
    }
}
