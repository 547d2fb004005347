//! Random sequences of append / read / roll / truncate / retention / reopen steps,
//! checked against a `Vec` of records (as sled checks its tree against a `BTreeMap`).

use proptest::prelude::*;
use pubsub_storage::{Log, RetentionPolicy};

use crate::{batch, read_all, small_config};

#[derive(Clone, Debug)]
enum Step {
    Append {
        count: u32,
    },
    Read {
        at: prop::sample::Index,
        max_bytes: usize,
    },
    Roll,
    Truncate {
        at: prop::sample::Index,
    },
    RetainBytes {
        bytes: u64,
    },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u32..20).prop_map(|count| Step::Append { count }),
        2 => (any::<prop::sample::Index>(), 1usize..3000).prop_map(|(at, max_bytes)| Step::Read { at, max_bytes }),
        1 => Just(Step::Roll),
        1 => any::<prop::sample::Index>().prop_map(|at| Step::Truncate { at }),
        1 => (0u64..20_000).prop_map(|bytes| Step::RetainBytes { bytes }),
        1 => Just(Step::Reopen),
    ]
}

/// The model: the values stored at each offset from `start`.
struct Model {
    start: u64,
    values: Vec<String>,
    /// Offset at which each batch begins, for batch-granular truncation.
    batch_starts: Vec<u64>,
}

impl Model {
    fn end(&self) -> u64 {
        self.start + self.values.len() as u64
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_a_vec(steps in proptest::collection::vec(step(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_config()).unwrap();
        let mut model = Model { start: 0, values: Vec::new(), batch_starts: Vec::new() };
        let mut tag = 0u64;
        for step in steps {
            match step {
                Step::Append { count } => {
                    tag += 1;
                    let bytes = batch(tag, count, 1_000 + tag as i64);
                    let info = log.append(&bytes, 3).unwrap();
                    prop_assert_eq!(info.base_offset, model.end());
                    model.batch_starts.push(model.end());
                    model.values.extend((0..count).map(|i| format!("{tag}-{i}")));
                }
                Step::Read { at, max_bytes } => {
                    if model.values.is_empty() { continue; }
                    let offset = model.start + at.index(model.values.len()) as u64;
                    let slice = log.read(offset, max_bytes).unwrap();
                    prop_assert!(!slice.is_empty(), "a read inside the log returns at least one batch");
                    let first = pubsub_storage::batch::batches(slice.as_ref()).next().unwrap().unwrap().0;
                    prop_assert!(first.base_offset <= offset && offset <= first.last_offset());
                }
                Step::Roll => log.roll().unwrap(),
                Step::Truncate { at } => {
                    let keep = model.batch_starts.iter().copied().filter(|&s| s >= model.start).collect::<Vec<_>>();
                    if keep.is_empty() { continue; }
                    let target = keep[at.index(keep.len())];
                    log.truncate_to(target).unwrap();
                    model.values.truncate((target - model.start) as usize);
                    model.batch_starts.retain(|&s| s < target);
                }
                Step::RetainBytes { bytes } => {
                    log.apply_retention(RetentionPolicy { retention: None, retention_bytes: Some(bytes) }).unwrap();
                    let start = log.log_start_offset();
                    prop_assert!(start >= model.start);
                    prop_assert!(start <= model.end());
                    model.values.drain(..(start - model.start) as usize);
                    model.start = start;
                }
                Step::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), small_config()).unwrap();
                }
            }
            prop_assert_eq!(log.log_start_offset(), model.start);
            prop_assert_eq!(log.log_end_offset(), model.end());
        }
        let got: Vec<String> = read_all(&log, model.start).into_iter().map(|(_, v)| v).collect();
        prop_assert_eq!(got, model.values);
    }
}
