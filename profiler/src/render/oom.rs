//! The time-to-OOM line of the daemon's reports and page:
//! `reaches its 512 MiB limit in ~3 h 10 min (2 h 50 min to 3 h 35 min; growing 41 ± 4 MiB/h, steady over 6 h)`.
use crate::{
    model::forecast::{OomForecast, Outlook},
    targets::memory_limit::LimitSource,
    units::human_bytes,
};

/// The forecast as one line (the process is the subject, named by the caller).
pub fn line(f: &OomForecast) -> String {
    let limit = match f.limit.source {
        LimitSource::Host => format!(
            "the host's {} of memory",
            human_bytes(f.limit.limit_bytes as f64)
        ),
        _ => format!("its {} limit", human_bytes(f.limit.limit_bytes as f64)),
    };
    let trend = format!(
        "growing {}, steady over {}",
        rate(f.rate, f.rate_se, f.span_secs),
        duration(f.span_secs)
    );
    match f.outlook {
        Outlook::Reaches {
            secs,
            earliest_secs,
            latest_secs,
        } => {
            let (earliest, latest) = (duration(earliest_secs), duration(latest_secs));
            // A range that rounds to one value says nothing beyond the estimate.
            let range = if earliest == latest {
                String::new()
            } else {
                format!("{earliest} to {latest}; ")
            };
            format!("reaches {limit} in ~{} ({range}{trend})", duration(secs))
        }
        Outlook::AtLimit => format!(
            "is at {limit} ({} charged) and still {trend}: reclaim or the OOM killer is next",
            human_bytes(f.limit.used_bytes as f64)
        ),
    }
}

/// `41 ± 4 MiB/h`: per hour once the trend spans an hour, per minute before.
fn rate(per_sec: f64, se: f64, span_secs: f64) -> String {
    let (factor, unit) = if span_secs >= 3600.0 {
        (3600.0, "h")
    } else {
        (60.0, "min")
    };
    let value = human_bytes(per_sec * factor);
    let (number, bytes_unit) = value.split_once(' ').unwrap_or((&value, ""));
    // The error in the rate's own unit, so the two read together.
    let scale = per_sec * factor / number.parse::<f64>().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let error = 2.0 * se * factor / scale;
    // At least one significant digit of the error.
    let error = if error >= 0.1 {
        format!("{error:.1}")
    } else if error >= 0.01 {
        format!("{error:.2}")
    } else {
        "<0.01".to_string()
    };
    format!("{number} ± {error} {bytes_unit}/{unit}")
}

/// `3 h 10 min`, `1 min 40 s`, `45 s`, `2 d 4 h`: two units at most.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec} s"),
        (0, 0, _) if sec == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {sec} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::memory_limit::MemoryLimit;

    const MIB: f64 = 1024.0 * 1024.0;

    /// Check the line of a steady leak under a 512 MiB cgroup limit, as the issue
    /// words it, with the range and the rate's error.
    #[test]
    fn reaches_line() {
        let f = OomForecast {
            limit: MemoryLimit {
                limit_bytes: 512 << 20,
                used_bytes: 382 << 20,
                source: LimitSource::CgroupV2 {
                    cgroup: "/pod".into(),
                },
            },
            rate: 41.0 * MIB / 3600.0,
            rate_se: 2.0 * MIB / 3600.0,
            span_secs: 6.0 * 3600.0,
            points: 13,
            outlook: Outlook::Reaches {
                secs: 3.0 * 3600.0 + 600.0,
                earliest_secs: 2.0 * 3600.0 + 50.0 * 60.0,
                latest_secs: 3.0 * 3600.0 + 35.0 * 60.0,
            },
        };
        assert_eq!(
            line(&f),
            "reaches its 512.0 MiB limit in ~3 h 10 min (2 h 50 min to 3 h 35 min; growing 41.0 ± 4.0 MiB/h, steady over 6 h)"
        );
        let at = OomForecast {
            outlook: Outlook::AtLimit,
            limit: MemoryLimit {
                source: LimitSource::Host,
                limit_bytes: 24 << 30,
                used_bytes: 24 << 30,
            },
            span_secs: 90.0,
            ..f
        };
        assert_eq!(
            line(&at),
            "is at the host's 24.0 GiB of memory (24.0 GiB charged) and still growing 699.7 ± 68.3 KiB/min, steady over 1 min 30 s: reclaim or the OOM killer is next"
        );
    }

    /// Check that a very sure rate keeps a significant digit of its error and that a
    /// range rounding to one duration is left out.
    #[test]
    fn tight_estimates() {
        let f = OomForecast {
            limit: MemoryLimit {
                limit_bytes: 256 << 20,
                used_bytes: 20 << 20,
                source: LimitSource::CgroupV1 {
                    cgroup: "/t".into(),
                },
            },
            rate: 56.2 * MIB / 60.0,
            rate_se: 0.01 * MIB / 60.0,
            span_secs: 18.0,
            points: 11,
            outlook: Outlook::Reaches {
                secs: 253.0,
                earliest_secs: 252.8,
                latest_secs: 253.2,
            },
        };
        assert_eq!(
            line(&f),
            "reaches its 256.0 MiB limit in ~4 min 13 s (growing 56.2 ± 0.02 MiB/min, steady over 18 s)"
        );
    }

    /// Check durations keep two units at most.
    #[test]
    fn durations() {
        assert_eq!(duration(45.4), "45 s");
        assert_eq!(duration(100.0), "1 min 40 s");
        assert_eq!(duration(120.0), "2 min");
        assert_eq!(duration(3600.0 * 3.0 + 600.0 + 20.0), "3 h 10 min");
        assert_eq!(duration(7200.0), "2 h");
        assert_eq!(duration(86_400.0 * 2.0 + 4.0 * 3600.0 + 5.0), "2 d 4 h");
        assert_eq!(duration(86_400.0), "1 d");
    }
}
