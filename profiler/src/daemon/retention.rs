//! Retention: drop the oldest captures when they are older than `--retain` or when
//! everything the daemon wrote exceeds `--max-disk`.
//!
//! [`plan`] is pure (which captures to delete); [`apply`] lists the daemon's own
//! captures (name pattern + marker, see [`super::layout`]) and deletes what the plan
//! says. The newest interval capture is always kept, so `DIR/latest` never dangles.
use std::{path::Path, time::Duration};

use time::OffsetDateTime;

use super::layout::{self, CaptureKind};

/// The limits; `None` means unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// One capture as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Item {
    pub time: OffsetDateTime,
    pub bytes: u64,
    /// Never delete (the newest interval capture).
    pub keep: bool,
}

/// Indices of `items` (sorted oldest first) to delete: first every item older than
/// `max_age`, then the oldest remaining ones until `other_bytes` plus what is left
/// fits in `max_bytes`.
pub fn plan(items: &[Item], now: OffsetDateTime, policy: Policy, other_bytes: u64) -> Vec<usize> {
    let mut delete = vec![false; items.len()];
    if let Some(age) = policy.max_age {
        for (i, item) in items.iter().enumerate() {
            let old = (now - item.time)
                .try_into()
                .is_ok_and(|d: Duration| d > age);
            delete[i] = old && !item.keep;
        }
    }
    if let Some(max) = policy.max_bytes {
        let mut total: u64 = other_bytes
            + items
                .iter()
                .zip(&delete)
                .filter(|(_, &d)| !d)
                .map(|(it, _)| it.bytes)
                .sum::<u64>();
        for (i, item) in items.iter().enumerate() {
            if total <= max {
                break;
            }
            if !delete[i] && !item.keep {
                delete[i] = true;
                total -= item.bytes;
            }
        }
    }
    (0..items.len()).filter(|&i| delete[i]).collect()
}

/// What one retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub deleted: usize,
    /// Bytes of everything the daemon wrote, after the pass.
    pub total_bytes: u64,
}

/// Apply `policy` to the captures under `out`.
pub fn apply(out: &Path, policy: Policy, now: OffsetDateTime) -> Outcome {
    let found = layout::list_captures(out);
    let newest_interval = found.iter().rposition(|f| f.kind == CaptureKind::Interval);
    let items: Vec<Item> = found
        .iter()
        .enumerate()
        .map(|(i, f)| Item {
            time: f.time,
            bytes: layout::disk_usage(&f.path),
            keep: Some(i) == newest_interval,
        })
        .collect();
    let other = own_overhead(out);
    let mut outcome = Outcome::default();
    let doomed = plan(&items, now, policy, other);
    for &i in &doomed {
        match std::fs::remove_dir_all(&found[i].path) {
            Ok(()) => outcome.deleted += 1,
            Err(e) => eprintln!(
                "profiler: warning: cannot delete old capture {}: {e}",
                found[i].path.display()
            ),
        }
    }
    outcome.total_bytes = other
        + items
            .iter()
            .enumerate()
            .filter(|(i, _)| !doomed.contains(i))
            .map(|(_, it)| it.bytes)
            .sum::<u64>();
    outcome
}

/// Bytes of what the daemon writes besides captures: DIR and its kind sub-directories
/// themselves, `index.html`, `latest`.
fn own_overhead(out: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let blocks = |p: &Path| std::fs::symlink_metadata(p).map_or(0, |m| m.blocks() * 512);
    let mut total =
        blocks(out) + blocks(&out.join(layout::INDEX)) + blocks(&out.join(layout::LATEST));
    for kind in CaptureKind::ALL {
        if !kind.subdir().is_empty() {
            total += blocks(&out.join(kind.subdir()));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn item(minute: u8, bytes: u64) -> Item {
        Item {
            time: datetime!(2026-11-24 14:00 UTC) + time::Duration::minutes(minute.into()),
            bytes,
            keep: false,
        }
    }

    /// Check that captures older than the age limit go, and younger ones stay.
    #[test]
    fn deletes_by_age() {
        let items = [item(0, 10), item(30, 10), item(55, 10)];
        let now = datetime!(2026-11-24 15:00 UTC);
        let policy = Policy {
            max_age: Some(Duration::from_secs(40 * 60)),
            max_bytes: None,
        };
        assert_eq!(plan(&items, now, policy, 0), vec![0]);
    }

    /// Check that the oldest captures go first until the total (with the daemon's other
    /// files) fits, and that a kept capture survives even over the bound.
    #[test]
    fn deletes_oldest_until_under_the_size_bound() {
        let items = [item(0, 40), item(1, 40), item(2, 40), item(3, 40)];
        let now = datetime!(2026-11-24 15:00 UTC);
        let policy = Policy {
            max_age: None,
            max_bytes: Some(100),
        };
        assert_eq!(plan(&items, now, policy, 10), vec![0, 1]);
        assert_eq!(plan(&items, now, policy, 0), vec![0, 1]);
        let mut kept = items;
        kept[3].keep = true;
        kept[3].bytes = 500;
        assert_eq!(plan(&kept, now, policy, 0), vec![0, 1, 2]);
        assert!(plan(&items, now, Policy::default(), 0).is_empty());
    }

    /// Check that both limits combine: age first, then size among the survivors.
    #[test]
    fn age_and_size_combine() {
        let items = [item(0, 50), item(50, 50), item(55, 50), item(59, 50)];
        let now = datetime!(2026-11-24 15:00 UTC);
        let policy = Policy {
            max_age: Some(Duration::from_secs(30 * 60)),
            max_bytes: Some(120),
        };
        assert_eq!(plan(&items, now, policy, 0), vec![0, 1]);
    }
}
