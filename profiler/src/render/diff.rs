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

    /// Check that stacks present in either profile get both counts (0 when absent).
    #[test]
    fn merges_both_counts() {
        let before = vec!["a;b 10".to_string(), "a;c 5".to_string()];
        let after = vec!["a;b 30".to_string(), "a;d 7".to_string()];
        let lines = differential_lines(&before, &after).unwrap();
        assert_eq!(lines, vec!["a;b 10 30", "a;c 5 0", "a;d 0 7"]);
    }
}
