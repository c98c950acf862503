//! The little of HPACK (RFC 7541) the ledger reads without the connection's dynamic
//! table: the representations of a header block, walked in order, and the two fields
//! that may come out, `:path` and `:status`, when the block shows them through the
//! static table or as a plain literal. Every other value is skipped unread.

/// One representation of a header block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field<'a> {
    /// An indexed field (static table 1–61, dynamic table above).
    Indexed(u64),
    /// A literal: its name by index or as a string, and its value.
    Literal { name: Name<'a>, value: Str<'a> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name<'a> {
    Index(u64),
    Literal(Str<'a>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Str<'a> {
    huffman: bool,
    bytes: &'a [u8],
}

/// Static table entries read here (RFC 7541 Appendix A).
const PATH_SLASH: u64 = 4;
const PATH_INDEX_HTML: u64 = 5;
const STATUS_FIRST: u64 = 8;
const STATUSES: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
/// Fields walked per block at most.
const MAX_FIELDS: usize = 64;

/// An HPACK integer with an `n`-bit prefix at `b[*at]`.
fn integer(b: &[u8], at: &mut usize, n: u32) -> Option<u64> {
    let mask = (1u64 << n) - 1;
    let mut value = u64::from(*b.get(*at)?) & mask;
    *at += 1;
    if value < mask {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        value += u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        if shift > 28 {
            return None;
        }
    }
}

fn string<'a>(b: &'a [u8], at: &mut usize) -> Option<Str<'a>> {
    let huffman = *b.get(*at)? & 0x80 != 0;
    let len = usize::try_from(integer(b, at, 7)?).ok()?;
    let bytes = b.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(Str { huffman, bytes })
}

/// The representations of `block` in order, up to the first one cut off by the end of
/// the capture or not HPACK at all.
fn fields(block: &[u8]) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < block.len() && out.len() < MAX_FIELDS {
        let first = block[at];
        let field = if first & 0x80 != 0 {
            integer(block, &mut at, 7).map(Field::Indexed)
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            if integer(block, &mut at, 5).is_none() {
                break;
            }
            continue;
        } else {
            let prefix = if first & 0x40 != 0 { 6 } else { 4 };
            (|| {
                let index = integer(block, &mut at, prefix)?;
                let name = if index == 0 {
                    Name::Literal(string(block, &mut at)?)
                } else {
                    Name::Index(index)
                };
                let value = string(block, &mut at)?;
                Some(Field::Literal { name, value })
            })()
        };
        match field {
            Some(f) => out.push(f),
            None => break,
        }
    }
    out
}

fn is_name(name: Name<'_>, index: &[u64], literal: &[u8]) -> bool {
    match name {
        Name::Index(i) => index.contains(&i),
        Name::Literal(s) => !s.huffman && s.bytes == literal,
    }
}

/// The request's `:path` without its query, when the block shows it.
pub fn path(block: &[u8]) -> Option<String> {
    fields(block).into_iter().find_map(|f| match f {
        Field::Indexed(PATH_SLASH) => Some("/".to_string()),
        Field::Indexed(PATH_INDEX_HTML) => Some("/index.html".to_string()),
        Field::Literal { name, value }
            if is_name(name, &[PATH_SLASH, PATH_INDEX_HTML], b":path") =>
        {
            let raw = if value.huffman {
                super::super::huffman::decode(value.bytes)?
            } else {
                value.bytes.to_vec()
            };
            Some(super::super::text::path_of(&raw))
        }
        _ => None,
    })
}

/// The response's `:status`, when the block shows it.
pub fn status(block: &[u8]) -> Option<u16> {
    let status_names: Vec<u64> = (STATUS_FIRST..STATUS_FIRST + 7).collect();
    fields(block).into_iter().find_map(|f| match f {
        Field::Indexed(i) if status_names.contains(&i) => STATUSES
            .get(usize::try_from(i - STATUS_FIRST).ok()?)
            .copied(),
        Field::Literal { name, value }
            if !value.huffman && is_name(name, &status_names, b":status") =>
        {
            let code = std::str::from_utf8(value.bytes).ok()?.parse().ok()?;
            (100..600).contains(&code).then_some(code)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check integers with and without continuation bytes (RFC 7541 C.1), and that an
    /// endless one is refused.
    #[test]
    fn integers() {
        let mut at = 0;
        assert_eq!(integer(&[0x0a], &mut at, 5), Some(10));
        let mut at = 0;
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], &mut at, 5), Some(1337));
        assert_eq!(at, 3);
        let mut at = 0;
        assert_eq!(
            integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &mut at, 5),
            None
        );
        let mut at = 0;
        assert_eq!(integer(&[0x1f, 0x9a], &mut at, 5), None, "cut off");
    }

    /// Check `:path` from the static table and from a literal with an indexed name,
    /// `:status` indexed and literal, and that a block cut short gives what it showed.
    #[test]
    fn path_and_status() {
        // :method POST (3), :scheme http (6), :path literal "/orders.Api/Place?x=1".
        let mut block = vec![0x83, 0x86, 0x44, 21];
        block.extend_from_slice(b"/orders.Api/Place?x=1");
        block.extend_from_slice(&[0x40, 0x02, b'x', b'y', 0x03, b's', b'e', b'c']);
        assert_eq!(path(&block).as_deref(), Some("/orders.Api/Place"));
        assert_eq!(path(&[0x82, 0x84]).as_deref(), Some("/"));
        // Never-indexed literal with a literal name.
        let mut lit = vec![0x10, 5];
        lit.extend_from_slice(b":path");
        lit.push(2);
        lit.extend_from_slice(b"/a");
        assert_eq!(path(&lit).as_deref(), Some("/a"));
        assert_eq!(path(&block[..10]), None, "value cut off by the capture");
        assert_eq!(path(&[0xbe]), None, "dynamic table");
        assert_eq!(status(&[0x88]), Some(200));
        assert_eq!(status(&[0x8d]), Some(404));
        assert_eq!(status(&[0x48, 0x03, b'5', b'0', b'3']), Some(503));
        assert_eq!(status(&[0x48, 0x03, b'x', b'0', b'3']), None);
        assert_eq!(status(&[]), None);
        // A size update first, then :status 500.
        assert_eq!(status(&[0x3f, 0xe1, 0x1f, 0x8e]), Some(500));
    }
}
