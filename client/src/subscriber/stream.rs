//! An open push stream: records in, acks and credits out (acks queued together
//! sent as one message).

use std::collections::VecDeque;
use std::time::Duration;

use futures::{Stream, StreamExt};
use pubsub_proto::v1;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Most messages of a stream's outbound queue merged into one.
const MERGED_MAX: usize = 1_024;

/// The stream's outbound messages, with the acks queued together sent as one message
/// (the server applies them alike), so a subscriber acking record by record does not
/// cost a message per record when it acks faster than they go out.
pub(super) fn coalesced(
    queued: impl Stream<Item = v1::StreamRequest> + Send + 'static,
) -> impl Stream<Item = v1::StreamRequest> + Send + 'static {
    use v1::stream_request::Kind;
    queued.ready_chunks(MERGED_MAX).flat_map(|chunk| {
        let mut merged: Vec<v1::StreamRequest> = Vec::with_capacity(chunk.len());
        let mut acks: Vec<v1::RecordId> = Vec::new();
        for message in chunk {
            match message.kind {
                Some(Kind::Ack(id)) => acks.push(id),
                kind => {
                    flush_acks(&mut merged, &mut acks);
                    merged.push(v1::StreamRequest { kind });
                }
            }
        }
        flush_acks(&mut merged, &mut acks);
        futures::stream::iter(merged)
    })
}

/// Appends the acks gathered so far as one message (a lone ack as itself).
fn flush_acks(merged: &mut Vec<v1::StreamRequest>, acks: &mut Vec<v1::RecordId>) {
    use v1::stream_request::Kind;
    let kind = match acks.len() {
        0 => return,
        1 => acks.pop().map(Kind::Ack),
        _ => Some(Kind::Acks(v1::RecordIds {
            records: std::mem::take(acks),
        })),
    };
    merged.push(v1::StreamRequest { kind });
}

pub(super) fn ids(records: &[(u32, u64)]) -> Vec<v1::RecordId> {
    records
        .iter()
        .map(|&(partition, offset)| v1::RecordId { partition, offset })
        .collect()
}

/// An open push stream.
pub struct SubscriberStream {
    inbound: tonic::Streaming<v1::StreamResponse>,
    sender: mpsc::Sender<v1::StreamRequest>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// The latest group assignment received (member id, generation, partitions).
    pub assignment: Option<v1::JoinGroupResponse>,
    /// Retention skips reported since last taken.
    pub skipped: Vec<v1::Skip>,
    /// Records of a batch received and not yet returned.
    ready: VecDeque<v1::DeliveredRecord>,
}

impl Drop for SubscriberStream {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl SubscriberStream {
    /// The stream opened as `inbound` and `sender`, with a heartbeat every second so
    /// the member stays present while idle.
    pub(super) fn new(
        inbound: tonic::Streaming<v1::StreamResponse>,
        sender: mpsc::Sender<v1::StreamRequest>,
    ) -> SubscriberStream {
        let heartbeat = {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let beat = v1::StreamRequest {
                        kind: Some(v1::stream_request::Kind::Heartbeat(true)),
                    };
                    if sender.send(beat).await.is_err() {
                        break;
                    }
                }
            })
        };
        SubscriberStream {
            inbound,
            sender,
            heartbeat,
            assignment: None,
            skipped: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next record; `None` when the server ended the stream.
    pub async fn next_record(&mut self) -> Result<Option<v1::DeliveredRecord>> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Ok(Some(record));
            }
            let Some(message) = self.inbound.message().await? else {
                return Ok(None);
            };
            match message.kind {
                Some(v1::stream_response::Kind::Record(record)) => return Ok(Some(record)),
                Some(v1::stream_response::Kind::Records(batch)) => self.ready.extend(batch.records),
                Some(v1::stream_response::Kind::Assignment(assignment)) => {
                    self.assignment = Some(assignment);
                }
                Some(v1::stream_response::Kind::Skipped(skip)) => self.skipped.push(skip),
                None => {}
            }
        }
    }

    async fn send(&self, kind: v1::stream_request::Kind) -> Result<()> {
        self.sender
            .send(v1::StreamRequest { kind: Some(kind) })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Acknowledges a record (returns its credit).
    pub async fn ack(&self, partition: u32, offset: u64) -> Result<()> {
        self.send(v1::stream_request::Kind::Ack(v1::RecordId {
            partition,
            offset,
        }))
        .await
    }

    /// Gives a record back for immediate redelivery.
    pub async fn nack(&self, partition: u32, offset: u64) -> Result<()> {
        self.send(v1::stream_request::Kind::Nack(v1::RecordId {
            partition,
            offset,
        }))
        .await
    }

    /// Grants more credits.
    pub async fn grant(&self, credits: u32) -> Result<()> {
        self.send(v1::stream_request::Kind::Credits(credits)).await
    }

    /// Ends the stream: stops sending and waits until the server has processed every
    /// ack sent before (it closes its side after the member has left).
    pub async fn close(mut self) -> Result<()> {
        self.heartbeat.abort();
        let (sender, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.sender, sender));
        while self.inbound.message().await.ok().flatten().is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::stream_request::Kind;

    fn ack(offset: u64) -> v1::StreamRequest {
        let id = v1::RecordId {
            partition: 0,
            offset,
        };
        v1::StreamRequest {
            kind: Some(Kind::Ack(id)),
        }
    }

    #[tokio::test]
    async fn queued_acks_go_out_together_in_order_with_what_lies_between() {
        let credits = v1::StreamRequest {
            kind: Some(Kind::Credits(5)),
        };
        let queued = vec![ack(1), ack(2), credits.clone(), ack(3)];
        let sent: Vec<_> = coalesced(futures::stream::iter(queued)).collect().await;
        let acks = |offsets: &[u64]| v1::StreamRequest {
            kind: Some(Kind::Acks(v1::RecordIds {
                records: offsets
                    .iter()
                    .map(|&offset| v1::RecordId {
                        partition: 0,
                        offset,
                    })
                    .collect(),
            })),
        };
        assert_eq!(sent, vec![acks(&[1, 2]), credits, ack(3)]);
    }
}
