//! Sizes and durations as people type them (`10GiB`, `500MB`, `7d`, `forever`) and as
//! `describe` prints them.
//!
//! The wire carries plain integers (bytes and milliseconds, `-1` for "no limit"); this
//! module is the only place that converts between those and human text, so every flag
//! and `--config` value accepts the same spellings, whichever program reads them.

use std::time::Duration;

/// A size or duration that does not parse; the message says what is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a number followed by an optional unit.
    #[error("invalid size {text:?}: expected a number and a unit, like 10GiB, 500MB or 1024")]
    Size {
        /// The text given.
        text: String,
    },
    /// A unit that is not a size unit.
    #[error("unknown size unit in {text:?}: expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB")]
    SizeUnit {
        /// The text given.
        text: String,
    },
    /// More decimal places than any whole number of bytes needs.
    #[error("invalid size {text:?}: too many decimal places")]
    Decimals {
        /// The text given.
        text: String,
    },
    /// A fraction of a byte.
    #[error("size {text:?} is not a whole number of bytes")]
    Fraction {
        /// The text given.
        text: String,
    },
    /// A size past what the field holds.
    #[error("size {text:?} is too large")]
    SizeTooLarge {
        /// The text given.
        text: String,
    },
    /// Not a duration.
    #[error("invalid duration {text:?} ({reason}): expected e.g. 7d, 12h, 30min, or -1/forever")]
    Duration {
        /// The text given.
        text: String,
        /// What the duration parser said.
        reason: String,
    },
    /// A zero duration where a positive one (or -1) is needed.
    #[error("duration {text:?} must be positive")]
    NotPositive {
        /// The text given.
        text: String,
    },
    /// A duration past what the field holds.
    #[error("duration {text:?} is too long")]
    DurationTooLong {
        /// The text given.
        text: String,
    },
}

/// Binary and decimal size units, lowercase. A bare `k`, `m`, `g` or `t` is binary,
/// as in `dd` and docker: people who type `10G` rarely mean 10^10 bytes.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("kb", 1_000),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("mb", 1_000_000),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("gb", 1_000_000_000),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("tb", 1_000_000_000_000),
];

/// Fraction digits accepted in a size: enough for any whole number of bytes of a TiB.
const FRACTION_DIGITS_MAX: usize = 12;

/// Parses a byte size: an integer or decimal number and an optional unit
/// (`B`, `KiB`/`K`, `KB`, `MiB`/`M`, `MB`, `GiB`/`G`, `GB`, `TiB`/`T`, `TB`; any case).
/// The result must be a whole number of bytes.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let invalid = || ValueError::Size {
        text: text.to_string(),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    let unit = unit.trim().to_ascii_lowercase();
    let Some(&(_, multiplier)) = SIZE_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(ValueError::SizeUnit {
            text: text.to_string(),
        });
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits_only(whole)
        || !digits_only(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(invalid());
    }
    if fraction.len() > FRACTION_DIGITS_MAX {
        return Err(ValueError::Decimals {
            text: text.to_string(),
        });
    }
    let too_large = || ValueError::SizeTooLarge {
        text: text.to_string(),
    };
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| too_large())?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction_bytes = fraction_value * u128::from(multiplier);
    if !fraction_bytes.is_multiple_of(scale) {
        return Err(ValueError::Fraction {
            text: text.to_string(),
        });
    }
    let bytes = whole
        .checked_mul(u128::from(multiplier))
        .and_then(|b| b.checked_add(fraction_bytes / scale))
        .ok_or_else(too_large)?;
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parses a size limit: a size as [`parse_size`] reads it, or `-1`/`unlimited` (-1).
pub fn parse_size_limit(text: &str) -> Result<i64, ValueError> {
    if is_unlimited(text, "unlimited") {
        return Ok(-1);
    }
    let bytes = parse_size(text)?;
    i64::try_from(bytes).map_err(|_| ValueError::SizeTooLarge {
        text: text.to_string(),
    })
}

/// Parses a retention time: a duration like `7d`, `12h` or `90min`, or `-1`/`forever`
/// (-1). Returns milliseconds.
pub fn parse_retention(text: &str) -> Result<i64, ValueError> {
    if is_unlimited(text, "forever") {
        return Ok(-1);
    }
    let duration = humantime::parse_duration(text.trim()).map_err(|e| ValueError::Duration {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    duration_ms(duration, text)
}

/// Parses a `--config` milliseconds value: a plain integer of milliseconds, or a
/// duration like `7d`; `-1`/`forever` as for [`parse_retention`].
pub fn parse_ms(text: &str) -> Result<i64, ValueError> {
    match text.trim().parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => parse_retention(text),
    }
}

/// A byte count for `describe`: `unlimited` for -1, `1 GiB` for whole binary units,
/// one decimal place otherwise.
pub fn format_size(bytes: i64) -> String {
    if bytes < 0 {
        return "unlimited".to_string();
    }
    const BINARY: &[(&str, i64)] = &[
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for &(unit, size) in BINARY {
        if bytes >= size {
            return if bytes % size == 0 {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{:.1} {unit}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// Milliseconds for `describe`: `forever` for -1, else `7days`, `1h 30m` and so on.
pub fn format_ms(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => humantime::format_duration(Duration::from_millis(ms)).to_string(),
        Err(_) => "forever".to_string(),
    }
}

fn is_unlimited(text: &str, word: &str) -> bool {
    let text = text.trim();
    text == "-1" || text.eq_ignore_ascii_case(word)
}

fn duration_ms(duration: Duration, text: &str) -> Result<i64, ValueError> {
    if duration.is_zero() {
        return Err(ValueError::NotPositive {
            text: text.to_string(),
        });
    }
    i64::try_from(duration.as_millis()).map_err(|_| ValueError::DurationTooLong {
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_size(input: &str, expected: Result<u64, &str>) {
        match (parse_size(input), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(got), Err(want)) => assert!(got.to_string().contains(want), "{input}: {got}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        check_size("1024", Ok(1024));
        check_size("0", Ok(0));
        check_size("10GiB", Ok(10 << 30));
        check_size("10 GiB", Ok(10 << 30));
        check_size("10gib", Ok(10 << 30));
        check_size("10G", Ok(10 << 30));
        check_size("500MB", Ok(500_000_000));
        check_size("500mb", Ok(500_000_000));
        check_size("64KiB", Ok(65_536));
        check_size("1kb", Ok(1_000));
        check_size("2TiB", Ok(2 << 40));
        check_size("3TB", Ok(3_000_000_000_000));
        check_size("7B", Ok(7));
        check_size(" 12 ", Ok(12));
    }

    #[test]
    fn sizes_accept_fractions_of_whole_bytes() {
        check_size("1.5GiB", Ok(3 << 29));
        check_size("0.5KiB", Ok(512));
        check_size("2.25MB", Ok(2_250_000));
        check_size("0.1KiB", Err("whole number of bytes"));
        check_size("1.5", Err("whole number of bytes"));
    }

    #[test]
    fn sizes_reject_garbage() {
        check_size("", Err("invalid size"));
        check_size("GiB", Err("invalid size"));
        check_size("10XB", Err("unknown size unit"));
        check_size("-5", Err("invalid size"));
        check_size("1.", Err("invalid size"));
        check_size(".5K", Err("invalid size"));
        check_size("1.2.3K", Err("invalid size"));
        check_size("10 Gi B", Err("unknown size unit"));
        check_size("99999999999999999999TiB", Err("too large"));
        check_size("20000000TiB", Err("too large"));
    }

    #[test]
    fn size_limits_take_minus_one_and_unlimited() {
        assert_eq!(parse_size_limit("-1"), Ok(-1));
        assert_eq!(parse_size_limit("unlimited"), Ok(-1));
        assert_eq!(parse_size_limit("10GiB"), Ok(10 << 30));
        assert!(parse_size_limit("16000000TiB").is_err());
    }

    #[test]
    fn retention_takes_durations_and_forever() {
        assert_eq!(parse_retention("7d"), Ok(7 * 24 * 3_600_000));
        assert_eq!(parse_retention("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_retention("1h 30m"), Ok(90 * 60_000));
        assert_eq!(parse_retention("250ms"), Ok(250));
        assert_eq!(parse_retention("-1"), Ok(-1));
        assert_eq!(parse_retention("forever"), Ok(-1));
        assert_eq!(parse_retention("Forever"), Ok(-1));
        assert!(
            parse_retention("7")
                .unwrap_err()
                .to_string()
                .contains("expected e.g. 7d")
        );
        assert!(parse_retention("soon").is_err());
        assert!(
            parse_retention("0s")
                .unwrap_err()
                .to_string()
                .contains("positive")
        );
    }

    #[test]
    fn config_ms_takes_integers_or_durations() {
        assert_eq!(parse_ms("604800000"), Ok(604_800_000));
        assert_eq!(parse_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_ms("-1"), Ok(-1));
        assert!(parse_ms("later").is_err());
    }

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(format_size(-1), "unlimited");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1_048_576), "1 MiB");
        assert_eq!(format_ms(-1), "forever");
        assert_eq!(format_ms(604_800_000), "7days");
        assert_eq!(format_ms(5_400_000), "1h 30m");
    }
}
