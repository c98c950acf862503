//! V8's source position tables: which script offset a bytecode offset came from, so a
//! suspended async function's `await` can be named by its line.
//!
//! A BytecodeArray keeps a table of (code offset, source position) deltas; the lookup
//! is pure, unit-tested on tables encoded as V8 writes them, and ends without a panic
//! on truncated or hostile bytes (they come from another process's memory).

/// The script offset recorded for bytecode `offset` in a source position table: the
/// last entry at or before it. Entries are deltas, each a zig-zag VLQ code offset
/// (negative for expression positions) and a zig-zag VLQ source position, whose
/// script offset is bits 1 to 30, stored plus one.
pub fn position_at(table: &[u8], offset: i64) -> Option<u32> {
    let mut at = 0usize;
    let mut code = 0i64;
    let mut raw = 0i64;
    let mut found = None;
    while at < table.len() {
        let delta = decode_vlq(table, &mut at)?;
        code += if delta >= 0 { delta } else { -(delta + 1) };
        raw += decode_vlq(table, &mut at)?;
        if code > offset {
            break;
        }
        found = Some(raw);
    }
    let script_offset = ((found? >> 1) & ((1 << 30) - 1)) - 1;
    u32::try_from(script_offset).ok()
}

/// One zig-zag VLQ integer (7 bits a byte, high bit: more follow).
fn decode_vlq(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        if shift >= 64 {
            return None;
        }
        value |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    Some((value >> 1) as i64 ^ -((value & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vlq(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    /// A table of (code offset, script offset, is statement) entries, as V8 encodes it.
    fn table(entries: &[(i64, i64, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut code, mut raw) = (0, 0);
        for &(c, pos, statement) in entries {
            let delta = c - code;
            vlq(&mut out, if statement { delta } else { -delta - 1 });
            let r = (pos + 1) << 1;
            vlq(&mut out, r - raw);
            code = c;
            raw = r;
        }
        out
    }

    /// Check the source position lookup on a table as V8 writes it: the last entry at
    /// or before the offset wins, expression and statement entries alike.
    #[test]
    fn position_table_lookup() {
        let t = table(&[
            (0, 2348, false),
            (11, 2348, false),
            (19, 2401, true),
            (36, 2459, false),
            (300, 70_000, true),
        ]);
        assert_eq!(position_at(&t, 0), Some(2348));
        assert_eq!(position_at(&t, 25), Some(2401));
        assert_eq!(position_at(&t, 36), Some(2459));
        assert_eq!(position_at(&t, 299), Some(2459));
        assert_eq!(position_at(&t, 5000), Some(70_000));
        assert_eq!(position_at(&[], 3), None);
    }

    /// Check that truncated or hostile tables end the lookup without a panic.
    #[test]
    fn hostile_position_tables() {
        assert_eq!(position_at(&[0x80], 3), None);
        assert_eq!(position_at(&[0xff; 20], 3), None);
        let t = table(&[(0, 10, true), (4, 20, true)]);
        assert_eq!(position_at(&t[..t.len() - 1], 9), None);
        // A raw value of 0 is "no position" (script offset -1).
        assert_eq!(position_at(&[0, 0], 0), None);
    }
}
