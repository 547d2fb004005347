//! Kafka requests as the listener decodes them: the first two bytes pick the API and
//! version, the rest is the body. Decoding must fail cleanly on any bytes, and no
//! array count or length read off the wire may size an allocation before the bytes
//! behind it are there (run with `-malloc_limit_mb`, see fuzz/README.md). The consumer
//! protocol's subscription bytes inside JoinGroup are decoded the same way.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fn decode<R: Decodable>(body: &[u8], version: i16) {
    let mut buf = Bytes::copy_from_slice(body);
    let _ = R::decode(&mut buf, version);
}

fuzz_target!(|bytes: &[u8]| {
    let [which, version, body @ ..] = bytes else {
        return;
    };
    let version = i16::from(*version % 16);
    match which % 20 {
        0 => decode::<ProduceRequest>(body, version),
        1 => decode::<FetchRequest>(body, version),
        2 => decode::<MetadataRequest>(body, version),
        3 => decode::<ListOffsetsRequest>(body, version),
        4 => decode::<ApiVersionsRequest>(body, version),
        5 => decode::<CreateTopicsRequest>(body, version),
        6 => decode::<DeleteTopicsRequest>(body, version),
        7 => decode::<CreatePartitionsRequest>(body, version),
        8 => decode::<DescribeConfigsRequest>(body, version),
        9 => decode::<IncrementalAlterConfigsRequest>(body, version),
        10 => decode::<DeleteRecordsRequest>(body, version),
        11 => decode::<SaslAuthenticateRequest>(body, version),
        12 => decode::<JoinGroupRequest>(body, version),
        13 => decode::<SyncGroupRequest>(body, version),
        14 => decode::<OffsetCommitRequest>(body, version),
        15 => decode::<OffsetFetchRequest>(body, version),
        16 => decode::<LeaveGroupRequest>(body, version),
        17 => decode::<ConsumerProtocolSubscription>(body, version % 4),
        18 => decode::<RequestHeader>(body, version % 3),
        _ => decode::<AlterConfigsRequest>(body, version),
    }
});
