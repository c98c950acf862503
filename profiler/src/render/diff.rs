//! Differential flamegraphs: what grew in one profile compared with another.
//!
//! inferno's differential mode takes two folded profiles and writes each stack with
//! both counts; the flamegraph is drawn with the second profile's widths, red where a
//! stack grew and blue where it shrank. `record` uses it for the first versus the
//! second half of a window (`memory-diff.svg`); `profiler diff A B` for two captures.
use std::io::BufReader;

/// Merge `before` and `after` folded lines into differential lines
/// (`stack BEFORE AFTER`).
pub fn differential_lines(before: &[String], after: &[String]) -> std::io::Result<Vec<String>> {
    // inferno adds the counts of a stack without checking for overflow (a panic in a
    // debug build, a wrong total in a release one): refuse counts that cannot add up.
    for lines in [before, after] {
        let total = lines.iter().try_fold(0u64, |sum, l| {
            let count = l
                .trim_end()
                .rsplit(' ')
                .next()
                .and_then(|c| c.parse::<u64>().ok());
            sum.checked_add(count.unwrap_or(0))
        });
        if total.is_none_or(|t| usize::try_from(t).is_err()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the counts of a folded profile add up to more than 2^64",
            ));
        }
    }
    let join = |lines: &[String]| -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    let before = join(before);
    let after = join(after);
    let mut out = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        BufReader::new(&before[..]),
        BufReader::new(&after[..]),
        &mut out,
    )?;
    // inferno emits stacks in hash order; sort so the output is reproducible.
    let mut lines: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    Ok(lines)
}

/// Changes within this many standard deviations of sampling noise stay neutral (the
/// report's `±` figures are 2σ too).
pub const NOISE_SIGMAS: f64 = 2.0;

/// How much sampling alone moves the estimates of each side. A stack estimated at `B`
/// bytes from samples taken one per `R` bytes on average rests on about `B / R`
/// samples, a Poisson count, each standing for `R` bytes: its standard deviation is
/// `R·√(B/R) = √(R·B)`. (A block larger than `R` is always sampled, at its size, so
/// this bounds the noise from above.) A rate of 0 means exact counts (waits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    /// Bytes per sample of the earlier profile.
    pub before_rate: f64,
    /// Bytes per sample of the later profile.
    pub after_rate: f64,
}

impl Noise {
    /// Both sides sampled one per `rate` bytes.
    pub fn sampled(rate: f64) -> Self {
        Self {
            before_rate: rate,
            after_rate: rate,
        }
    }

    /// Standard deviation of `after - before` from sampling alone.
    pub fn sigma(&self, before: f64, after: f64) -> f64 {
        (self.before_rate * before + self.after_rate * after)
            .max(0.0)
            .sqrt()
    }
}

/// One stack's change with its uncertainty.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub stack: String,
    pub before: u64,
    pub after: u64,
    /// `NOISE_SIGMAS` standard deviations of the change.
    pub margin: f64,
}

impl Change {
    pub fn delta(&self) -> i128 {
        i128::from(self.after) - i128::from(self.before)
    }
}

/// Differential lines in which only changes sampling cannot explain are coloured.
#[derive(Clone, Debug, Default)]
pub struct Differential {
    /// `stack BEFORE AFTER` lines for inferno; a change within the noise is written
    /// as `stack AFTER AFTER`, which inferno draws neutral (no change).
    pub lines: Vec<String>,
    /// The same stacks with both estimates as they are (for `.folded` files).
    pub merged: Vec<String>,
    /// Changes beyond the noise, largest first.
    pub significant: Vec<Change>,
    /// Stacks whose change lies within the noise (drawn neutral).
    pub within_noise: usize,
    /// Whether the noise was known (None: every change is coloured).
    pub noise: Option<Noise>,
}

impl Differential {
    /// A few words for a subtitle: what the colours mean, e.g. `coloured beyond ±2σ
    /// sampling noise: 3 changed, 12 within (white)`.
    pub fn legend(&self) -> String {
        let changed = self.significant.len();
        match self.noise {
            None => format!("red grew, blue shrank (sampling noise unknown): {changed} changed"),
            Some(n) if n.before_rate == 0.0 && n.after_rate == 0.0 => {
                format!("red grew, blue shrank (exact counts): {changed} changed")
            }
            Some(_) => format!(
                "coloured beyond ±{NOISE_SIGMAS:.0}σ sampling noise: {changed} changed, \
                 {} within (white)",
                self.within_noise
            ),
        }
    }

    /// The largest change with its uncertainty, for a title:
    /// `largest change +25.0 MiB ± 8.7 MiB at cache_insert_session`.
    pub fn largest(&self, units: impl Fn(f64) -> String) -> String {
        let Some(top) = self.significant.first() else {
            return match self.noise {
                Some(n) if n.before_rate > 0.0 || n.after_rate > 0.0 => {
                    "no change beyond sampling noise".into()
                }
                _ => "no change".into(),
            };
        };
        let delta = top.delta() as f64;
        let sign = if delta < 0.0 { "-" } else { "+" };
        let leaf = top.stack.rsplit(';').next().unwrap_or_default();
        let margin = if top.margin > 0.0 {
            format!(" ± {}", units(top.margin))
        } else {
            String::new()
        };
        format!(
            "largest change {sign}{}{margin} at {leaf}",
            units(delta.abs())
        )
    }
}

/// Merge `before` and `after` as [`differential_lines`] does, then neutralise each
/// stack whose change lies within [`NOISE_SIGMAS`] standard deviations of sampling
/// noise (`noise`: None when unknown, and every change is coloured). A steady leak
/// split 138 vs 112 samples between two halves differs by 26 samples with a σ of
/// √250 ≈ 16: that is noise, not a slowing leak.
pub fn significant_lines(
    before: &[String],
    after: &[String],
    noise: Option<Noise>,
) -> std::io::Result<Differential> {
    let merged = differential_lines(before, after)?;
    let mut out = Differential {
        noise,
        ..Default::default()
    };
    for line in merged.iter().cloned() {
        let parsed = line.rsplitn(3, ' ').collect::<Vec<_>>();
        let (Some(a), Some(b), Some(stack)) = (parsed.first(), parsed.get(1), parsed.get(2)) else {
            out.lines.push(line);
            continue;
        };
        let (Ok(b), Ok(a)) = (b.parse::<u64>(), a.parse::<u64>()) else {
            out.lines.push(line);
            continue;
        };
        if a == b {
            out.lines.push(line);
            continue;
        }
        let margin = noise.map_or(0.0, |n| NOISE_SIGMAS * n.sigma(b as f64, a as f64));
        if (a as f64 - b as f64).abs() <= margin {
            out.within_noise += 1;
            out.lines.push(format!("{stack} {a} {a}"));
        } else {
            out.significant.push(Change {
                stack: stack.to_string(),
                before: b,
                after: a,
                margin,
            });
            out.lines.push(line);
        }
    }
    out.merged = merged;
    out.significant.sort_by(|x, y| {
        y.delta()
            .abs()
            .cmp(&x.delta().abs())
            .then_with(|| x.stack.cmp(&y.stack))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB256: f64 = 256.0 * 1024.0;

    fn bytes(samples: u64) -> u64 {
        samples * KIB256 as u64
    }

    /// Check that a steady leak split 138 vs 112 samples between the halves is drawn
    /// neutral, while a change sampling cannot explain (100 vs 200) keeps its colour.
    #[test]
    fn noise_stays_neutral_and_real_change_is_coloured() {
        let before = vec![
            format!("app;steady {}", bytes(138)),
            format!("app;faster {}", bytes(100)),
        ];
        let after = vec![
            format!("app;steady {}", bytes(112)),
            format!("app;faster {}", bytes(200)),
        ];
        let d = significant_lines(&before, &after, Some(Noise::sampled(KIB256))).unwrap();
        assert_eq!(
            d.lines,
            vec![
                format!("app;faster {} {}", bytes(100), bytes(200)),
                format!("app;steady {} {}", bytes(112), bytes(112)),
            ]
        );
        assert_eq!((d.significant.len(), d.within_noise), (1, 1));
        let top = &d.significant[0];
        assert_eq!(top.stack, "app;faster");
        // 2σ of 300 samples of 256 KiB: 2·√300·256 KiB ≈ 8.7 MiB.
        assert!((top.margin / KIB256 - 2.0 * 300f64.sqrt()).abs() < 1e-9);
        assert_eq!(
            d.legend(),
            "coloured beyond ±2σ sampling noise: 1 changed, 1 within (white)"
        );
        assert_eq!(
            d.largest(|b| format!("{:.1} MiB", b / 1048576.0)),
            "largest change +25.0 MiB ± 8.7 MiB at faster"
        );
    }

    /// Check that without a known noise (folded files) or with exact counts (waits)
    /// every change is coloured, and the legend says why.
    #[test]
    fn unknown_or_zero_noise_colours_every_change() {
        let before = vec!["a;b 10".to_string()];
        let after = vec!["a;b 11".to_string()];
        for noise in [None, Some(Noise::sampled(0.0))] {
            let d = significant_lines(&before, &after, noise).unwrap();
            assert_eq!(d.lines, vec!["a;b 10 11"]);
            assert_eq!(d.significant.len(), 1);
        }
        let unknown = significant_lines(&before, &after, None).unwrap();
        assert!(
            unknown.legend().contains("noise unknown"),
            "{}",
            unknown.legend()
        );
        assert_eq!(unknown.largest(|b| b.to_string()), "largest change +1 at b");
    }

    /// Check that counts whose sum overflows are refused, not added (the fuzz target's find).
    #[test]
    fn overflowing_counts_are_refused() {
        let huge = vec!["a 18446744073709551615".to_string(), "a 1".to_string()];
        let err = differential_lines(&huge, &[]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(differential_lines(&["a 1".to_string()], &["a 2".to_string()]).is_ok());
    }

    /// Check that stacks present in either profile get both counts (0 when absent).
    #[test]
    fn merges_both_counts() {
        let before = vec!["a;b 10".to_string(), "a;c 5".to_string()];
        let after = vec!["a;b 30".to_string(), "a;d 7".to_string()];
        let lines = differential_lines(&before, &after).unwrap();
        assert_eq!(lines, vec!["a;b 10 30", "a;c 5 0", "a;d 0 7"]);
    }
}

#[cfg(test)]
mod fuzz_finds {
    use super::*;

    /// Check that the folded fuzz target's first find (counts that overflow when inferno
    /// adds them) is an error, not a panic, fed exactly as the target feeds it.
    #[test]
    fn fuzz_crash_input_is_an_error() {
        let data = include_bytes!("../../../fuzz/corpus/folded/overflow_counts");
        let text = String::from_utf8_lossy(data);
        let (before, after) = text.split_once('\0').unwrap_or((&text, &text));
        let lines = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| crate::render::folded::parse_line(l).is_some())
                .map(str::to_string)
                .collect()
        };
        let _ = differential_lines(&lines(before), &lines(after));
    }
}
