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

#[cfg(test)]
mod tests {
    use super::*;

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
