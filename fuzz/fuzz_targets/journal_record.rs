//! Records of the subscription-state journal as a consumer manager reads them back
//! when it rebuilds its state: any bytes decode to operations or are refused, never
//! read past their end or sized into an allocation from a length prefix; what decodes
//! encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsub_proto::journal::{begin, decode, push};

fuzz_target!(|bytes: &[u8]| {
    let Ok(record) = decode(bytes) else {
        return;
    };
    let mut again = Vec::with_capacity(bytes.len());
    begin(&mut again, record.epoch);
    for op in record.ops {
        push(&mut again, op).expect("a decoded op encodes");
    }
    assert_eq!(again, bytes, "decode and encode disagree");
});
