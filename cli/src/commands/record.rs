//! How `read` prints a record: its raw value on a line, or one JSON object per line.
//!
//! Records are bytes, not text. The text format writes the value's bytes untouched
//! (never a lossy UTF-8 conversion), so `pubsub read t > file` gives back what was
//! written. JSON can only carry strings, so a key, value or header value that is not
//! valid UTF-8 is base64 (standard alphabet) and flagged by a `*_encoding` field.

use std::borrow::Cow;
use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pubsub_client::ConsumerRecord;
use serde::Serialize;

/// A record as one JSON line.
#[derive(Serialize)]
struct JsonRecord<'a> {
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    value: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
    headers: Vec<JsonHeader<'a>>,
    /// Which delivery this is (1 for the first), for records of a subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_attempt: Option<u32>,
}

/// A header; headers stay a list because keys may repeat and order matters.
#[derive(Serialize)]
struct JsonHeader<'a> {
    key: &'a str,
    value: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
}

/// Writes the record's value bytes as they are, then a newline (an absent value is
/// an empty line).
pub fn write_text(out: &mut impl Write, record: &ConsumerRecord) -> std::io::Result<()> {
    if let Some(value) = &record.value {
        out.write_all(value)?;
    }
    out.write_all(b"\n")
}

/// Writes the record as one JSON object and a newline.
pub fn write_json(out: &mut impl Write, record: &ConsumerRecord) -> std::io::Result<()> {
    write_json_delivered(out, record, None)
}

/// [`write_json`] for a record delivered by a subscription, with its delivery attempt.
pub fn write_json_delivered(
    out: &mut impl Write,
    record: &ConsumerRecord,
    delivery_attempt: Option<u32>,
) -> std::io::Result<()> {
    let (key, key_encoding) = encode(record.key.as_deref());
    let (value, value_encoding) = encode(record.value.as_deref());
    let json = JsonRecord {
        partition: record.partition.0,
        offset: record.offset,
        timestamp: record.timestamp,
        key,
        key_encoding,
        value,
        value_encoding,
        headers: record
            .headers
            .iter()
            .map(|(key, value)| {
                let (value, value_encoding) = encode(value.as_deref());
                JsonHeader {
                    key,
                    value,
                    value_encoding,
                }
            })
            .collect(),
        delivery_attempt,
    };
    serde_json::to_writer(&mut *out, &json)?;
    out.write_all(b"\n")
}

/// The bytes as a JSON string: as they are when UTF-8, else base64 and its marker.
fn encode(bytes: Option<&[u8]>) -> (Option<Cow<'_, str>>, Option<&'static str>) {
    let Some(bytes) = bytes else {
        return (None, None);
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(Cow::Borrowed(text)), None),
        Err(_) => (Some(Cow::Owned(STANDARD.encode(bytes))), Some("base64")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pubsub_client::PartitionId;

    fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> ConsumerRecord {
        ConsumerRecord {
            partition: PartitionId(2),
            offset: 41,
            timestamp: 1_700_000_000_000,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![
                ("trace".into(), Some(Bytes::from_static(b"abc"))),
                ("blob".into(), Some(Bytes::from_static(&[0xff, 0x00]))),
                ("empty".into(), None),
            ],
        }
    }

    fn json(record: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        write_json(&mut out, record).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn utf8_fields_are_plain_strings() {
        let line = json(&record(
            Some(b"user-1"),
            Some("h\u{e9}llo \"x\"".as_bytes()),
        ));
        assert_eq!(
            line,
            concat!(
                r#"{"partition":2,"offset":41,"timestamp":1700000000000,"key":"user-1","#,
                r#""value":"héllo \"x\"","headers":[{"key":"trace","value":"abc"},"#,
                r#"{"key":"blob","value":"/wA=","value_encoding":"base64"},"#,
                r#"{"key":"empty","value":null}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn non_utf8_fields_fall_back_to_base64() {
        let line = json(&record(Some(&[0xc3, 0x28]), Some(&[0, 159, 146, 150])));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["key"], "wyg=");
        assert_eq!(parsed["key_encoding"], "base64");
        assert_eq!(parsed["value"], "AJ+Slg==");
        assert_eq!(parsed["value_encoding"], "base64");
    }

    #[test]
    fn absent_key_and_value_are_null() {
        let parsed: serde_json::Value = serde_json::from_str(&json(&record(None, None))).unwrap();
        assert!(parsed["key"].is_null());
        assert!(parsed["value"].is_null());
        assert!(parsed.get("key_encoding").is_none());
    }

    #[test]
    fn text_writes_raw_bytes_and_a_newline() {
        let mut out = Vec::new();
        write_text(&mut out, &record(None, Some(&[0xff, b'a']))).unwrap();
        write_text(&mut out, &record(None, None)).unwrap();
        assert_eq!(out, vec![0xff, b'a', b'\n', b'\n']);
    }
}
