//! Produce and InitProducerId. A request's batches go to the same append as the gRPC
//! Produce: validated (CRC, sizes, sequences), stamped with offsets, stored as sent.
//! Partitions are appended in the order the request lists them, while reading the
//! request, so pipelined requests on one connection keep their order; acks=all waits
//! for the in-sync replicas afterwards, in a task. acks=0 gets no answer, as in Kafka.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use pubsub_proto::auth::Operation;
use pubsub_proto::v1;
use pubsub_storage::batch::BatchHeader;

use super::codes;
use super::conn::{Ctx, Pending, decode};
use crate::error::Error;
use crate::service::data::{Appended, append};

/// One partition's part of a produce, appended or refused.
enum Outcome {
    Appended(Appended),
    Refused(i16, String),
}

/// Splits concatenated batches into one `Bytes` each (sharing the buffer); the CRC
/// and the rest are checked by the append.
fn split_batches(records: Bytes) -> Result<Vec<Bytes>, Error> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let header = BatchHeader::parse(&records[at..])?;
        let end = at
            .checked_add(header.total_bytes())
            .filter(|end| *end <= records.len())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a batch claims {} bytes but only {} remain",
                    header.total_bytes(),
                    records.len() - at
                ))
            })?;
        batches.push(records.slice(at..end));
        at = end;
    }
    Ok(batches)
}

fn acks(kafka_acks: i16) -> Option<v1::Acks> {
    match kafka_acks {
        0 => Some(v1::Acks::None),
        1 => Some(v1::Acks::Leader),
        -1 => Some(v1::Acks::All),
        _ => None,
    }
}

async fn append_partition(
    ctx: &Ctx,
    topic: &TopicName,
    index: i32,
    records: Option<Bytes>,
    acks: Option<v1::Acks>,
) -> Outcome {
    let name = topic.0.as_str();
    if !ctx.allowed(Operation::Produce, name) {
        let message = format!("not allowed to produce to topic {name:?}");
        return Outcome::Refused(ResponseError::TopicAuthorizationFailed.code(), message);
    }
    let Some(acks) = acks else {
        let message = "acks must be 0, 1 or -1".to_string();
        return Outcome::Refused(ResponseError::InvalidRequiredAcks.code(), message);
    };
    let Ok(partition) = u32::try_from(index) else {
        let message = format!("partition {index} does not exist");
        return Outcome::Refused(ResponseError::UnknownTopicOrPartition.code(), message);
    };
    let appended = async {
        let batches = split_batches(records.unwrap_or_default())?;
        let request = v1::ProduceRequest {
            topic: name.to_string(),
            partition,
            acks: acks as i32,
            batches,
            correlation_id: 0,
        };
        append(&ctx.broker, request).await
    };
    match appended.await {
        Ok(appended) => Outcome::Appended(appended),
        Err(error) => Outcome::Refused(codes::code(&error), error.to_string()),
    }
}

fn partition_answer(
    version: i16,
    index: i32,
    result: Result<v1::ProduceResponse, (i16, String)>,
) -> PartitionProduceResponse {
    let answer = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    match result {
        Ok(done) => answer.with_base_offset(done.base_offsets.first().map_or(-1, |o| *o as i64)),
        // Messages are in answers from v8 on.
        Err((code, message)) if version >= 8 => answer
            .with_error_code(code)
            .with_base_offset(-1)
            .with_error_message(Some(StrBytes::from_string(message))),
        Err((code, _)) => answer.with_error_code(code).with_base_offset(-1),
    }
}

/// Appends every partition's batches now; answers (after acks=all waits) in a task.
pub(super) async fn handle(ctx: Ctx, body: Bytes) -> Result<Pending, String> {
    let request: ProduceRequest = decode(body, ApiKey::Produce, ctx.version)?;
    let acks = acks(request.acks);
    let transactional = request.transactional_id.is_some();
    let mut appended = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let outcome = if transactional {
                let message = "transactions are not supported".to_string();
                Outcome::Refused(
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    message,
                )
            } else {
                append_partition(&ctx, &topic.name, data.index, data.records, acks).await
            };
            partitions.push((data.index, outcome));
        }
        appended.push((topic.name, partitions));
    }
    if acks == Some(v1::Acks::None) {
        return Ok(Pending::Ready(Ok(None)));
    }
    Ok(Pending::Later(tokio::spawn(async move {
        let mut responses = Vec::with_capacity(appended.len());
        for (name, partitions) in appended {
            let mut answers = Vec::with_capacity(partitions.len());
            for (index, outcome) in partitions {
                let result = match outcome {
                    Outcome::Appended(appended) => appended
                        .acknowledge()
                        .await
                        .map_err(|e| (codes::code(&e), e.to_string())),
                    Outcome::Refused(code, message) => Err((code, message)),
                };
                answers.push(partition_answer(ctx.version, index, result));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(answers),
            );
        }
        ctx.frame(&ProduceResponse::default().with_responses(responses))
    })))
}

/// InitProducerId: a fresh producer id (random, as the SDK's), epoch 0. Transactional
/// ids are refused: transactions are not supported.
pub(super) async fn init_producer_id(
    _ctx: Ctx,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(pubsub_proto::ids::random_producer_id()))
        .with_producer_epoch(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_acks_map_to_ours() {
        assert_eq!(acks(0), Some(v1::Acks::None));
        assert_eq!(acks(1), Some(v1::Acks::Leader));
        assert_eq!(acks(-1), Some(v1::Acks::All));
        assert_eq!(acks(2), None);
    }

    #[test]
    fn garbage_records_are_refused_not_split() {
        assert!(split_batches(Bytes::from_static(b"short")).is_err());
        assert!(split_batches(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn producer_ids_are_positive() {
        for _ in 0..100 {
            assert!(pubsub_proto::ids::random_producer_id() >= 0);
        }
    }
}
