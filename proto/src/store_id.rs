//! A guard against a key-value store that comes back empty without saying so.
//!
//! sled, like most log-structured stores, treats a damaged record on open as the torn
//! end of its log and drops everything after it: a store damaged near its start opens
//! empty, and a service would carry on as if it had never held anything (a cluster
//! manager that forgot every topic would even have its brokers delete their data). So
//! each store gets an id, kept both inside the store and in a small file beside it
//! (`STORE_ID`, written once, synced). On open, an id in the file that the store no
//! longer holds means the store lost its records, and opening fails with a message
//! that says so and what to do.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file that holds a store's id.
pub const FILE: &str = "STORE_ID";

/// A store's id: 16 random bytes, kept as 32 hex digits.
pub type StoreId = [u8; 16];

/// Why a store may not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreIdError {
    /// The store no longer holds the id its file names: it lost its records.
    #[error(
        "the store in {dir} lost its records (damaged or replaced: its id {expected} is gone); \
         restore the directory from a backup, or, for a member of a replicated group, \
         remove it and add the node back as a new member"
    )]
    Lost {
        /// The store's directory.
        dir: PathBuf,
        /// The id the file names, in hex.
        expected: String,
    },
    /// The file exists but does not hold an id.
    #[error("{path} does not hold a store id (32 hex digits); restore it or the store")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing the file, or the store, failed.
    #[error("store id in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn hex(id: &StoreId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(text: &str) -> Option<StoreId> {
    let text = text.trim();
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// Checks the store in `dir` against its id file. `stored` is the id the store
/// holds, if any; `keep` stores a new id in the store and makes it durable.
///
/// - No file and no id: a new store; an id is made, kept in the store, then the file.
/// - No file but an id: a store from before this guard; the file is written.
/// - A file whose id the store holds: fine.
/// - A file whose id the store does not hold: [`StoreIdError::Lost`].
pub fn check(
    dir: &Path,
    stored: Option<StoreId>,
    keep: impl FnOnce(&StoreId) -> std::io::Result<()>,
) -> Result<StoreId, StoreIdError> {
    let path = dir.join(FILE);
    let io = |source| StoreIdError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let expected =
                parse(&text).ok_or_else(|| StoreIdError::Malformed { path: path.clone() })?;
            if stored == Some(expected) {
                Ok(expected)
            } else {
                Err(StoreIdError::Lost {
                    dir: dir.to_path_buf(),
                    expected: hex(&expected),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = match stored {
                Some(id) => id,
                None => {
                    let id: StoreId = rand::random();
                    keep(&id).map_err(io)?;
                    id
                }
            };
            write_file(dir, &path, &id).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes the id file whole (temporary file, sync, rename, sync of the directory).
fn write_file(dir: &Path, path: &Path, id: &StoreId) -> std::io::Result<()> {
    let temporary = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(format!("{}\n", hex(id)).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_gets_an_id_and_keeps_opening() {
        let dir = tempfile_dir();
        let mut kept = None;
        let id = check(&dir, None, |id| {
            kept = Some(*id);
            Ok(())
        })
        .unwrap();
        assert_eq!(kept, Some(id));
        assert_eq!(check(&dir, Some(id), |_| unreachable!()).unwrap(), id);
    }

    #[test]
    fn a_store_that_lost_its_id_is_refused_with_what_to_do() {
        let dir = tempfile_dir();
        let id = check(&dir, None, |_| Ok(())).unwrap();
        let error = check(&dir, None, |_| Ok(())).unwrap_err();
        assert!(matches!(error, StoreIdError::Lost { .. }), "{error}");
        assert!(error.to_string().contains(&hex(&id)), "{error}");
        assert!(error.to_string().contains("backup"), "{error}");
        let other = check(&dir, Some([7; 16]), |_| Ok(())).unwrap_err();
        assert!(matches!(other, StoreIdError::Lost { .. }));
    }

    #[test]
    fn a_store_from_before_the_guard_gets_its_file() {
        let dir = tempfile_dir();
        assert_eq!(
            check(&dir, Some([3; 16]), |_| unreachable!()).unwrap(),
            [3; 16]
        );
        assert_eq!(
            check(&dir, Some([3; 16]), |_| unreachable!()).unwrap(),
            [3; 16]
        );
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let dir = tempfile_dir();
        std::fs::write(dir.join(FILE), "not hex").unwrap();
        let error = check(&dir, None, |_| Ok(())).unwrap_err();
        assert!(matches!(error, StoreIdError::Malformed { .. }), "{error}");
        assert_eq!(parse(&hex(&[0xab; 16])), Some([0xab; 16]));
        assert_eq!(parse("zz"), None);
    }

    /// A fresh directory under the system's temporary directory.
    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("store-id-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
