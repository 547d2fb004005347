//! The record layout of the subscription-state journal
//! ([`crate::ids::SUBSCRIPTION_STATE_TOPIC`]): how its records carry writes to the
//! consumer manager's sled trees. Here, beside the other wire formats, so the fuzz
//! targets reach it.
//!
//! A record's value is a version byte, for version 2 the writer's ownership epoch
//! (`be64`), then operations, each
//! `tree(u8) key_len(be16) key kind(u8) [value_len(be32) value]`, kind 1 a put and
//! 0 a removal. Version 1 records (no epoch) are a lone consumer manager's, which
//! owns every partition. On replay a version 2 record whose epoch is below the
//! highest seen before it in its partition is a write of an owner that had already
//! been replaced, and is skipped; version 1 records are always applied. Every length is checked against what is left before anything is
//! taken, so a damaged or foreign record is refused with [`Undecodable`], never
//! read past its end or sized into an allocation.

use std::fmt;

/// The layout without an epoch.
const VERSION: u8 = 1;
/// The layout with the writer's epoch.
const VERSION_EPOCH: u8 = 2;

/// The sled trees the journal carries, by their number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Subscription records, keyed by name.
    Subscriptions = 0,
    /// Per-partition cursors.
    Cursors = 1,
    /// Acknowledged ranges above the committed offset.
    Acks = 2,
    /// Delivery counts of redelivered records.
    Deliveries = 3,
}

impl Tree {
    /// Every tree, in wire order.
    pub const ALL: [Tree; 4] = [
        Tree::Subscriptions,
        Tree::Cursors,
        Tree::Acks,
        Tree::Deliveries,
    ];

    fn from_byte(byte: u8) -> Option<Tree> {
        Tree::ALL.get(usize::from(byte)).copied()
    }
}

/// One write to a tree, borrowed from the record it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op<'a> {
    /// The tree written.
    pub tree: Tree,
    /// The key.
    pub key: &'a [u8],
    /// The new value; `None` removes the key.
    pub value: Option<&'a [u8]>,
}

/// A journal record that cannot be read: its offset and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Undecodable {
    /// What is wrong, for the log line.
    pub why: &'static str,
    /// Where in the value.
    pub at: usize,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.why, self.at)
    }
}

/// Starts a record's value, written under ownership `epoch` (`None`: a lone
/// consumer manager's, in the layout without one).
pub fn begin(buffer: &mut Vec<u8>, epoch: Option<u64>) {
    match epoch {
        Some(epoch) => {
            buffer.push(VERSION_EPOCH);
            buffer.extend_from_slice(&epoch.to_be_bytes());
        }
        None => buffer.push(VERSION),
    }
}

/// A decoded record: the epoch it was written under, and its operations in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The writer's ownership epoch (`None` in the layout without one).
    pub epoch: Option<u64>,
    /// The writes.
    pub ops: Vec<Op<'a>>,
}

/// Appends one operation to a record begun with [`begin`]. A key longer than 65,535
/// bytes is never written by the store (names are bounded); one would be refused
/// here rather than cut.
pub fn push(buffer: &mut Vec<u8>, op: Op<'_>) -> Result<(), Undecodable> {
    let Ok(key_len) = u16::try_from(op.key.len()) else {
        return Err(Undecodable {
            why: "key too long",
            at: buffer.len(),
        });
    };
    let value_len = op.value.map(|v| u32::try_from(v.len()));
    if let Some(Err(_)) = value_len {
        return Err(Undecodable {
            why: "value too long",
            at: buffer.len(),
        });
    }
    buffer.push(op.tree as u8);
    buffer.extend_from_slice(&key_len.to_be_bytes());
    buffer.extend_from_slice(op.key);
    match (op.value, value_len) {
        (Some(value), Some(Ok(len))) => {
            buffer.push(1);
            buffer.extend_from_slice(&len.to_be_bytes());
            buffer.extend_from_slice(value);
        }
        _ => buffer.push(0),
    }
    Ok(())
}

/// Reads a record: its epoch and its operations, in order.
pub fn decode(value: &[u8]) -> Result<Record<'_>, Undecodable> {
    let mut reader = Reader {
        bytes: value,
        at: 0,
    };
    let epoch = match reader.take(1, "empty record")?[0] {
        VERSION => None,
        VERSION_EPOCH => Some(u64::from_be_bytes(reader.array("truncated epoch")?)),
        _ => {
            return Err(Undecodable {
                why: "unknown version",
                at: 0,
            });
        }
    };
    let mut ops = Vec::new();
    while reader.at < value.len() {
        let tree = Tree::from_byte(reader.take(1, "truncated op")?[0]).ok_or(Undecodable {
            why: "unknown tree",
            at: reader.at - 1,
        })?;
        let key_len = usize::from(u16::from_be_bytes(reader.array("truncated key length")?));
        let key = reader.take(key_len, "truncated key")?;
        let value = match reader.take(1, "truncated op kind")?[0] {
            0 => None,
            1 => {
                let len = u32::from_be_bytes(reader.array("truncated value length")?);
                Some(reader.take(len as usize, "truncated value")?)
            }
            _ => {
                return Err(Undecodable {
                    why: "unknown op kind",
                    at: reader.at - 1,
                });
            }
        };
        ops.push(Op { tree, key, value });
    }
    Ok(Record { epoch, ops })
}

/// A cursor over a record's bytes that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, why: &'static str) -> Result<&'a [u8], Undecodable> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(Undecodable { why, at: self.at });
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, why: &'static str) -> Result<[u8; N], Undecodable> {
        let at = self.at;
        self.take(N, why)?
            .try_into()
            .map_err(|_| Undecodable { why, at })
    }
}

/// The subscription a key belongs to: keys are `name`, or `name 0x00 ...`.
pub fn subscription_of(key: &[u8]) -> &[u8] {
    key.split(|&b| b == 0).next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(ops: &[Op<'_>]) -> Vec<(Tree, Vec<u8>, Option<Vec<u8>>)> {
        ops.iter()
            .map(|op| (op.tree, op.key.to_vec(), op.value.map(<[u8]>::to_vec)))
            .collect()
    }

    fn tree() -> impl Strategy<Value = Tree> {
        prop::sample::select(Tree::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn operations_come_back_as_written(
            epoch in prop::option::of(any::<u64>()),
            ops in prop::collection::vec(
                (tree(), prop::collection::vec(any::<u8>(), 0..40),
                 prop::option::of(prop::collection::vec(any::<u8>(), 0..40))),
                0..20,
            )
        ) {
            let mut buffer = Vec::new();
            begin(&mut buffer, epoch);
            for (tree, key, value) in &ops {
                push(&mut buffer, Op { tree: *tree, key, value: value.as_deref() }).unwrap();
            }
            let record = decode(&buffer).unwrap();
            prop_assert_eq!(record.epoch, epoch);
            prop_assert_eq!(owned(&record.ops), ops);
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let _ = decode(&bytes);
        }

        #[test]
        fn a_cut_record_is_refused(cut in 1usize..30, epoch in prop::option::of(any::<u64>())) {
            let mut buffer = Vec::new();
            begin(&mut buffer, epoch);
            push(&mut buffer, Op { tree: Tree::Acks, key: b"sub\0key", value: Some(b"12345678") }).unwrap();
            // Anything between the header and the whole record.
            let cut = cut.min(buffer.len() - 2 - if epoch.is_some() { 8 } else { 0 });
            prop_assert!(decode(&buffer[..buffer.len() - cut]).is_err());
        }
    }

    #[test]
    fn a_length_prefix_past_the_end_is_refused_before_allocating() {
        let mut buffer = vec![VERSION, Tree::Acks as u8, 0, 1, b'k', 1];
        buffer.extend_from_slice(&u32::MAX.to_be_bytes());
        let refused = decode(&buffer).unwrap_err();
        assert_eq!(refused.why, "truncated value");
        assert_eq!(decode(&[3]).unwrap_err().why, "unknown version");
        assert_eq!(decode(&[2, 0, 0]).unwrap_err().why, "truncated epoch");
        assert_eq!(decode(&[]).unwrap_err().why, "empty record");
    }

    #[test]
    fn keys_name_their_subscription() {
        assert_eq!(subscription_of(b"orders"), b"orders");
        assert_eq!(subscription_of(b"orders\0\0\0\0\x01"), b"orders");
    }
}
