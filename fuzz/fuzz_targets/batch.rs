//! A producer's batch as the leader receives it: `batch::validate` (header, length,
//! CRC, codec, then every record, decompressing first) must refuse bad bytes with an
//! error, never panic or allocate from a length prefix; whatever it accepts must
//! decode record by record. The same bytes also go through the batch iterator a fetch
//! answer is split with, and the record decoder consumers use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsub_storage::{DecodedBatch, batch};

/// The broker's default largest batch.
const MAX_BATCH_BYTES: usize = 1 << 20;

fuzz_target!(|bytes: &[u8]| {
    if batch::validate(bytes, MAX_BATCH_BYTES).is_ok() {
        let decoded = DecodedBatch::new(bytes, 64 << 20).expect("a validated batch decodes");
        for record in decoded.records() {
            record.expect("every record of a validated batch decodes");
        }
    }
    for item in batch::batches(bytes) {
        let Ok((_, one)) = item else { break };
        if let Ok(decoded) = DecodedBatch::new(one, 1 << 20) {
            for record in decoded.records() {
                if record.is_err() {
                    break;
                }
            }
        }
    }
});
