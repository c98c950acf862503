//! Parsing of human units on the command line: byte sizes (`256KiB`, `1M`) and
//! durations (`30s`, `5m`, `1.5`).
use std::time::Duration;

/// Parse a byte size: a number with an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB;
/// all units are powers of 1024, as memory sizes are).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (num, unit) =
        split_number(text).ok_or_else(|| format!("invalid size {text:?} (try 256KiB, 4MiB, 1)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?} (use B, KiB, MiB or GiB)"
            ))
        }
    };
    let bytes = num * mult as f64;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("size {text:?} must be at least 1 byte"));
    }
    Ok(bytes.round() as u64)
}

/// The longest duration accepted: ten years, far past any capture or retention, and far
/// below what `Instant` arithmetic can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parse a duration: one or more numbers each with a unit (ms, s, m, h, d), as in `30s`,
/// `1h30m`, `1.5d`; a bare number is seconds. At most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (try 30s, 5m, 1h30m, 1d, 1.5)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut secs = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit.trim() {
            // A bare number: seconds, and only on its own (`1h30` is ambiguous).
            "" if digits == rest.len() && secs == 0.0 => 1.0,
            "s" | "sec" => 1.0,
            "ms" => 0.001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => {
                return Err(format!(
                    "invalid duration unit in {text:?} (use ms, s, m, h or d)"
                ))
            }
        };
        secs += number * scale;
        rest = tail.trim_start();
    }
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration {text:?} must be positive"));
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("duration {text:?} is too long (at most 10 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Split `12.5KiB` into its number and its (trimmed) unit.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Format bytes for people: `1.5 MiB`.
pub fn human_bytes(bytes: f64) -> String {
    let sign = if bytes < 0.0 { "-" } else { "" };
    let b = bytes.abs();
    let (v, unit) = if b >= (1u64 << 30) as f64 {
        (b / (1u64 << 30) as f64, "GiB")
    } else if b >= (1u64 << 20) as f64 {
        (b / (1u64 << 20) as f64, "MiB")
    } else if b >= 1024.0 {
        (b / 1024.0, "KiB")
    } else {
        return format!("{sign}{b:.0} B");
    };
    format!("{sign}{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that sizes with binary units parse and nonsense is rejected.
    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("256KiB"), Ok(262144));
        assert_eq!(parse_bytes("1"), Ok(1));
        assert_eq!(parse_bytes("4M"), Ok(4 << 20));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    /// Check that durations parse with and without units.
    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }

    /// Check that compound durations and days parse, and huge ones are refused, not a panic.
    #[test]
    fn parses_compound_and_refuses_huge_durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1h30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1..5s").is_err());
        for huge in ["99999999999999999999s", "1e400", "99999999999999999999d"] {
            let err = parse_duration(huge).unwrap_err();
            assert!(
                err.contains("too long") || err.contains("invalid"),
                "{huge}: {err}"
            );
        }
    }

    /// Check that byte counts print with binary units.
    #[test]
    fn formats_bytes() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(-3.0 * 1048576.0), "-3.0 MiB");
    }
}
