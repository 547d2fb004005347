//! A minimal Kafka-protocol connection for the benchmarks: requests written whole,
//! answers read in order (Kafka answers a connection's requests in the order sent),
//! and the Metadata lookup that says which broker leads each partition.

use std::collections::HashMap;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest answer read: the broker's own request limit.
const FRAME_BYTES_MAX: usize = 100 << 20;

/// The writing half: encodes and sends requests.
pub struct Sender {
    writer: OwnedWriteHalf,
    next_correlation_id: i32,
    buf: BytesMut,
}

/// The reading half: reads answers in request order.
pub struct Receiver {
    reader: BufReader<OwnedReadHalf>,
}

/// Connects to a Kafka listener.
pub async fn connect(address: &str) -> anyhow::Result<(Sender, Receiver)> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to the Kafka listener at {address}"))?;
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let sender = Sender {
        writer,
        next_correlation_id: 0,
        buf: BytesMut::with_capacity(1 << 20),
    };
    Ok((
        sender,
        Receiver {
            reader: BufReader::with_capacity(1 << 20, reader),
        },
    ))
}

impl Sender {
    /// Sends `request` as `version` of `api_key`.
    pub async fn send<R: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &R,
    ) -> anyhow::Result<()> {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("pubsub-bench")));
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.buf.clear();
        self.buf.put_i32(0);
        header.encode(&mut self.buf, api_key.request_header_version(version))?;
        request.encode(&mut self.buf, version)?;
        let size = i32::try_from(self.buf.len() - 4).context("request too large")?;
        self.buf[..4].copy_from_slice(&size.to_be_bytes());
        self.writer.write_all(&self.buf).await?;
        Ok(())
    }
}

impl Receiver {
    /// Reads the next answer as `version` of `api_key`.
    pub async fn receive<R: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
    ) -> anyhow::Result<R> {
        let size = self
            .reader
            .read_i32()
            .await
            .context("the Kafka listener closed")?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= FRAME_BYTES_MAX)
            .with_context(|| format!("answer size {size} out of range"))?;
        let mut body = vec![0u8; size];
        self.reader.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        ResponseHeader::decode(&mut body, api_key.response_header_version(version))?;
        let answer = R::decode(&mut body, version)?;
        if body.has_remaining() {
            bail!(
                "{api_key:?} answer has {} bytes left over",
                body.remaining()
            );
        }
        Ok(answer)
    }
}

/// Each partition of `topic` with the Kafka address of its leader.
pub async fn leaders(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<(i32, String)>> {
    const VERSION: i16 = 12;
    let (mut sender, mut receiver) = connect(bootstrap).await?;
    let asked = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]));
    sender.send(ApiKey::Metadata, VERSION, &asked).await?;
    let answer: MetadataResponse = receiver.receive(ApiKey::Metadata, VERSION).await?;
    let brokers: HashMap<i32, String> = answer
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let found = answer
        .topics
        .first()
        .context("no topic in the Metadata answer")?;
    if found.error_code != 0 {
        bail!("Metadata for {topic:?}: Kafka error {}", found.error_code);
    }
    let mut partitions = Vec::with_capacity(found.partitions.len());
    for p in &found.partitions {
        let address = brokers.get(&p.leader_id.0).with_context(|| {
            format!(
                "partition {} has no leader serving Kafka",
                p.partition_index
            )
        })?;
        partitions.push((p.partition_index, address.clone()));
    }
    partitions.sort();
    Ok(partitions)
}
