//! Settings of one partition log, validated once when the log is opened.

use std::time::Duration;

use crate::error::{Error, Result};

/// When appended bytes are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append returns only after an fsync covers it; concurrent appenders share
    /// one fsync (group commit).
    Always,
    /// An fsync runs when this much time has passed since the last one.
    Interval(Duration),
    /// The OS flushes when it likes; durability comes from replicas.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => {
                let ms = other
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.trim_end_matches("ms").parse::<u64>().ok())
                    .ok_or_else(|| {
                        format!("unknown fsync policy {other:?}: expected always, never or interval:<ms>")
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// Configuration of one partition log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment rolls once it holds this many bytes (default 1 GiB; at most 2 GiB so
    /// that index positions fit in 32 bits).
    pub segment_bytes: u64,
    /// A segment rolls once it is this old, even if small (default 7 days).
    pub segment_age: Duration,
    /// Largest size of each index, kept in memory while its segment is active (default
    /// 10 MiB); a full index rolls the segment.
    pub index_bytes: usize,
    /// Bytes of log between two offset index entries (default 4 KiB).
    pub index_interval_bytes: u32,
    /// Largest batch accepted (default 1 MiB).
    pub max_batch_bytes: usize,
    /// When appends are forced to disk.
    pub fsync: FsyncPolicy,
}

/// Largest allowed segment: index positions are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = 2 << 30;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            max_batch_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

impl LogConfig {
    /// Checks the values against each other; the log refuses to open otherwise.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.segment_bytes < 4096 || self.segment_bytes > SEGMENT_BYTES_MAX {
            return bad(format!(
                "segment_bytes {} must be between 4096 and {SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes < crate::batch::HEADER_BYTES
            || self.max_batch_bytes as u64 > self.segment_bytes
        {
            return bad(format!(
                "max_batch_bytes {} must fit in a segment of {} bytes",
                self.max_batch_bytes, self.segment_bytes
            ));
        }
        if self.index_bytes < 64 {
            return bad(format!(
                "index_bytes {} must be at least 64",
                self.index_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if self.segment_age.is_zero() {
            return bad("segment_age must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_prints() {
        for text in ["always", "never", "interval:250"] {
            let policy: FsyncPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn default_config_is_valid() {
        LogConfig::default().validate().unwrap();
        let tiny = LogConfig {
            segment_bytes: 100,
            ..LogConfig::default()
        };
        assert!(tiny.validate().is_err());
    }
}
