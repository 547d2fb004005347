//! Publish and ReadRecords: produce and read record by record, for gRPC clients in
//! languages without a RecordBatch v2 codec. The broker does the encoding (one batch
//! per partition, cut at the topic's batch limit) and the decoding; the batches then
//! take the same path as Produce and Fetch. A partition led elsewhere is served by
//! forwarding to its leader, so any broker answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pubsub_proto::net::Channel;
use pubsub_proto::partitioner::partition_for_key;
use pubsub_proto::v1;
use pubsub_proto::v1::broker_client::BrokerClient;
use pubsub_storage::{
    BatchBuilder, Compression, DECOMPRESSED_BATCH_BYTES_MAX, DecodedBatch, Header, ProducerStamp,
};
use tonic::Status;

use super::data::{BATCHES_PER_REQUEST_MAX, FETCH_BYTES_DEFAULT, FETCH_WAIT_MAX, produce};
use crate::broker::Broker;
use crate::error::Error;

/// Most records in one Publish.
const PUBLISH_RECORDS_MAX: usize = 10_000;
/// Records a ReadRecords answers when it does not say.
const READ_RECORDS_DEFAULT: usize = 1_000;
/// Most records one ReadRecords answers.
const READ_RECORDS_MAX: usize = 10_000;

/// Spreads the unkeyed records of successive requests over the partitions.
static ROUND_ROBIN: AtomicU32 = AtomicU32::new(0);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Each record's partition: the one it names, else its key's, else `unkeyed`.
fn choose_partitions(
    request: &v1::PublishRequest,
    partitions: u32,
    unkeyed: u32,
) -> Result<Vec<u32>, Error> {
    request
        .records
        .iter()
        .map(|record| match (record.partition, &record.key) {
            (Some(p), _) if p >= partitions => Err(Error::PartitionNotFound {
                topic: request.topic.clone(),
                partition: p,
                partitions,
            }),
            (Some(p), _) => Ok(p),
            (None, Some(key)) => Ok(partition_for_key(key, partitions)),
            (None, None) => Ok(unkeyed),
        })
        .collect()
}

/// Encodes records `indexes` of `records` into batches of at most `limit` bytes each;
/// returns the batches and, per batch, how many records it holds.
fn encode(
    records: &[v1::PublishRecord],
    indexes: &[usize],
    limit: usize,
) -> Result<(Vec<Bytes>, Vec<usize>), Error> {
    let now = now_ms();
    let mut batches = Vec::new();
    let mut counts = Vec::new();
    let mut builder = BatchBuilder::new();
    let mut close = |builder: &mut BatchBuilder| -> Result<(), Error> {
        let records = builder.len() as usize;
        if let Some(batch) = builder.finish(Compression::None, ProducerStamp::NONE, true)? {
            counts.push(records);
            batches.push(Bytes::from(batch));
        }
        Ok(())
    };
    for &i in indexes {
        let record = &records[i];
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|h| Header {
                key: h.key.as_str(),
                value: h.value.as_deref(),
            })
            .collect();
        let (key, value) = (record.key.as_deref(), record.value.as_deref());
        let adds = BatchBuilder::record_bytes(key, value, &headers);
        if !builder.is_empty() && builder.estimated_bytes() + adds > limit {
            close(&mut builder)?;
        }
        builder.push(record.timestamp_ms.unwrap_or(now), key, value, &headers);
    }
    close(&mut builder)?;
    Ok((batches, counts))
}

/// A stub on the leader that a not-leader error names; any other error as a status.
fn leader_stub(broker: &Broker, error: Error) -> Result<BrokerClient<Channel>, Status> {
    match error {
        Error::NotLeader {
            leader_address: Some(address),
            ..
        } => broker
            .peers()
            .stub(&address)
            .ok_or_else(|| Status::unavailable(format!("cannot reach the leader at {address}"))),
        other => Err(other.into()),
    }
}

/// Produces at the partition's leader: here, or forwarded to the broker the
/// not-leader error names.
async fn produce_at_leader(
    broker: &Arc<Broker>,
    request: v1::ProduceRequest,
) -> Result<v1::ProduceResponse, Status> {
    match broker.leader_partition(&request.topic, request.partition) {
        Ok(_) => Ok(produce(broker, request).await?),
        Err(error) => Ok(leader_stub(broker, error)?
            .produce(request)
            .await?
            .into_inner()),
    }
}

/// Answers Publish.
pub(crate) async fn publish(
    broker: &Arc<Broker>,
    request: v1::PublishRequest,
) -> Result<v1::PublishResponse, Status> {
    let count = request.records.len();
    if count == 0 || count > PUBLISH_RECORDS_MAX {
        return Err(Status::invalid_argument(format!(
            "a publish holds 1 to {PUBLISH_RECORDS_MAX} records, not {count}"
        )));
    }
    let topic = broker.topic(&request.topic)?;
    let partitions = topic.record.partitions;
    let limit = topic
        .record
        .settings
        .max_message_bytes
        .and_then(|b| usize::try_from(b).ok())
        .unwrap_or(FETCH_BYTES_DEFAULT);
    let unkeyed = ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) % partitions.max(1);
    let chosen = choose_partitions(&request, partitions, unkeyed)?;
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, partition) in chosen.iter().enumerate() {
        groups.entry(*partition).or_default().push(i);
    }
    let mut sends = Vec::with_capacity(groups.len());
    for (partition, indexes) in &groups {
        let (batches, counts) = encode(&request.records, indexes, limit)?;
        if batches.len() > BATCHES_PER_REQUEST_MAX {
            return Err(Status::invalid_argument(
                "the records of one partition need more than 1,024 batches; publish fewer at once",
            ));
        }
        let produce = v1::ProduceRequest {
            topic: request.topic.clone(),
            partition: *partition,
            acks: request.acks,
            batches,
            correlation_id: 0,
        };
        sends.push(async move {
            let answer = produce_at_leader(broker, produce).await?;
            Ok::<_, Status>((indexes, counts, answer.base_offsets))
        });
    }
    let mut positions = vec![v1::RecordPosition::default(); count];
    for sent in futures::future::join_all(sends).await {
        let (indexes, counts, base_offsets) = sent?;
        let mut next = indexes.iter();
        for (batch, records) in counts.iter().enumerate() {
            let base = base_offsets.get(batch).copied().unwrap_or(0);
            for (j, &i) in next.by_ref().take(*records).enumerate() {
                positions[i] = v1::RecordPosition {
                    partition: chosen[i],
                    offset: if base_offsets.is_empty() {
                        0
                    } else {
                        base + j as u64
                    },
                };
            }
        }
    }
    Ok(v1::PublishResponse { positions })
}

/// `part` as `Bytes`: a view of `whole` when it lies inside it (an uncompressed batch
/// of the fetched buffer, itself a view of the segment map), else a copy (a
/// decompressed batch).
fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let inside = whole.as_ptr_range();
    let range = part.as_ptr_range();
    if inside.start <= range.start && range.end <= inside.end {
        whole.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// Decodes fetched batches into records from `offset` on, at most `max`.
fn decode(
    partition: u32,
    offset: u64,
    records: &Bytes,
    max: usize,
) -> Result<(Vec<v1::DeliveredRecord>, Option<u64>), Error> {
    let mut out = Vec::new();
    let mut next = None;
    for batch in pubsub_storage::batch::batches(records) {
        let (_, bytes) = batch?;
        let decoded = DecodedBatch::new(bytes, DECOMPRESSED_BATCH_BYTES_MAX)?;
        for record in decoded.records() {
            let record = record?;
            if record.offset < offset {
                continue;
            }
            if out.len() == max {
                return Ok((out, Some(record.offset)));
            }
            next = Some(record.offset + 1);
            out.push(v1::DeliveredRecord {
                partition,
                offset: record.offset,
                timestamp_ms: record.timestamp,
                key: record.key.map(|k| share(records, k)),
                value: record.value.map(|v| share(records, v)),
                headers: record
                    .headers
                    .iter()
                    .map(|h| v1::RecordHeader {
                        key: h.key.to_string(),
                        value: h.value.map(|v| share(records, v)),
                    })
                    .collect(),
                delivery_attempt: 0,
            });
        }
        if let Some(after) = next {
            next = Some(after.max(decoded.header().next_offset()));
        }
    }
    Ok((out, next))
}

/// Fetches at the partition's leader: here, or forwarded.
async fn fetch_at_leader(
    broker: &Arc<Broker>,
    request: v1::FetchRequest,
) -> Result<v1::FetchResponse, Status> {
    match broker.leader_replica(&request.topic, request.partition) {
        Ok((partition, _)) => {
            let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
            let deadline = tokio::time::Instant::now() + wait;
            let fetched = partition
                .fetch(request.offset, FETCH_BYTES_DEFAULT, deadline, false)
                .await?;
            Ok(v1::FetchResponse {
                records: fetched.records,
                high_watermark: fetched.high_watermark,
                log_start_offset: fetched.log_start_offset,
                log_end_offset: fetched.log_end_offset,
                topic_created_ms: 0,
            })
        }
        Err(error) => Ok(leader_stub(broker, error)?
            .fetch(request)
            .await?
            .into_inner()),
    }
}

/// Answers ReadRecords.
pub(crate) async fn read_records(
    broker: &Arc<Broker>,
    request: v1::ReadRecordsRequest,
) -> Result<v1::ReadRecordsResponse, Status> {
    let max = match request.max_records as usize {
        0 => READ_RECORDS_DEFAULT,
        n => n.min(READ_RECORDS_MAX),
    };
    let fetch = v1::FetchRequest {
        topic: request.topic.clone(),
        partition: request.partition,
        offset: request.offset,
        max_bytes: FETCH_BYTES_DEFAULT as u32,
        max_wait_ms: request.max_wait_ms,
        ..Default::default()
    };
    let fetched = fetch_at_leader(broker, fetch).await?;
    let (records, next) = decode(request.partition, request.offset, &fetched.records, max)?;
    Ok(v1::ReadRecordsResponse {
        records,
        next_offset: next.unwrap_or(request.offset),
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&str>, partition: Option<u32>) -> v1::PublishRecord {
        v1::PublishRecord {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::from_static(b"v")),
            partition,
            ..Default::default()
        }
    }

    #[test]
    fn partitions_come_from_the_record_the_key_or_the_round_robin() {
        let request = v1::PublishRequest {
            topic: "t".into(),
            records: vec![
                record(None, Some(2)),
                record(Some("k"), None),
                record(None, None),
            ],
            acks: 0,
        };
        let chosen = choose_partitions(&request, 4, 3).unwrap();
        assert_eq!(chosen, vec![2, partition_for_key(b"k", 4), 3]);
        let past = v1::PublishRequest {
            records: vec![record(None, Some(4))],
            ..request
        };
        assert!(choose_partitions(&past, 4, 0).is_err());
    }

    #[test]
    fn encoded_records_are_cut_at_the_limit_and_decode_back() {
        let records: Vec<_> = (0..100).map(|_| record(Some("key"), None)).collect();
        let indexes: Vec<usize> = (0..100).collect();
        let (batches, counts) = encode(&records, &indexes, 500).unwrap();
        assert!(batches.len() > 1);
        assert_eq!(counts.iter().sum::<usize>(), 100);
        assert!(batches.iter().all(|b| b.len() <= 500));
        let all: Bytes = batches.iter().flat_map(|b| b.iter().copied()).collect();
        // Offsets within each batch start at 0 (the leader stamps them).
        let (decoded, _) = decode(0, 0, &batches[0], 1000).unwrap();
        let value = decoded[0].value.as_ref().unwrap();
        assert!(
            batches[0].as_ptr_range().contains(&value.as_ptr()),
            "a view, not a copy"
        );
        assert_eq!(decoded.len(), counts[0]);
        assert_eq!(decoded[0].key.as_deref(), Some(&b"key"[..]));
        assert!(decode(0, 0, &all, 5).unwrap().0.len() <= 5);
    }
}
