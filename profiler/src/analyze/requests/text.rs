//! Turning protocol bytes into the few words the ledger may keep: a path without its
//! query, a method from a fixed list, a SQL keyword from a fixed list.

/// The longest path kept; longer ones are cut (with `…`).
const MAX_PATH: usize = 128;

/// The path of a request target: no scheme or authority (absolute form), no query, no
/// fragment, control and non-ASCII bytes replaced by `?`, at most [`MAX_PATH`]
/// characters.
pub fn path_of(target: &[u8]) -> String {
    let mut t = target;
    if let Some(after) = find(t, b"://").map(|i| &t[i + 3..]) {
        t = after
            .iter()
            .position(|&b| b == b'/')
            .map_or(b"/", |i| &after[i..]);
    }
    let end = t
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(t.len());
    let mut path: String = t[..end]
        .iter()
        .take(MAX_PATH)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    if end > MAX_PATH {
        path.push('…');
    }
    path
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// SQL statements by their first keyword; anything else is `OTHER`, so no identifier or
/// literal of the text can come out.
const SQL_KEYWORDS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DISCARD",
    "DO",
    "DROP",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "INSERT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLISTEN",
    "UPDATE",
    "VACUUM",
    "VALUES",
    "WITH",
];

/// The first keyword of a SQL text (after blanks, `--` and `/* */` comments and opening
/// parentheses), upper-cased, if it is a statement keyword; `OTHER` for anything else;
/// `None` when the captured prefix ends before a word does.
pub fn sql_keyword(sql: &[u8]) -> Option<&'static str> {
    let mut i = 0;
    loop {
        match sql.get(i..) {
            Some([b' ' | b'\t' | b'\r' | b'\n' | b'(', ..]) => i += 1,
            Some([b'-', b'-', ..]) => i += sql[i..].iter().position(|&b| b == b'\n')? + 1,
            Some([b'/', b'*', ..]) => i += find(&sql[i + 2..], b"*/")? + 4,
            Some([]) | None => return None,
            Some(_) => break,
        }
    }
    let word: Vec<u8> = sql[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .take(16)
        .map(u8::to_ascii_uppercase)
        .collect();
    // A NUL ends a message's text: a word cut by the end of the capture is unknown.
    let ended = sql.get(i + word.len()).is_some();
    if word.is_empty() {
        return ended.then_some("OTHER");
    }
    if !ended {
        return None;
    }
    Some(
        SQL_KEYWORDS
            .iter()
            .find(|k| k.as_bytes() == word.as_slice())
            .copied()
            .unwrap_or("OTHER"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that a path keeps no query, fragment, scheme or host, and no control bytes.
    #[test]
    fn paths_lose_query_and_authority() {
        assert_eq!(path_of(b"/orders/42?token=secret"), "/orders/42");
        assert_eq!(path_of(b"/a#frag"), "/a");
        assert_eq!(path_of(b"http://user:pw@host:80/x?y"), "/x");
        assert_eq!(path_of(b"http://host"), "/");
        assert_eq!(path_of(b"*"), "*");
        assert_eq!(path_of(b"/\x01\xff"), "/??");
        let long = [b'a'; 300];
        assert_eq!(path_of(&long).chars().count(), MAX_PATH + 1);
    }

    /// Check that only the first keyword of a statement comes out, from a fixed list.
    #[test]
    fn sql_keywords_from_a_fixed_list() {
        assert_eq!(
            sql_keyword(b"BEGIN"[..].as_ref()),
            None,
            "cut at the capture's end"
        );
        assert_eq!(sql_keyword(b"begin\0"), Some("BEGIN"));
        assert_eq!(
            sql_keyword(b"  -- note\n/* c */ (select 1)\0"),
            Some("SELECT")
        );
        assert_eq!(
            sql_keyword(b"secret_table_name drop\0"),
            Some("OTHER"),
            "an unknown first word is never echoed"
        );
        assert_eq!(sql_keyword(b"\0"), Some("OTHER"));
        assert_eq!(sql_keyword(b""), None);
        assert_eq!(sql_keyword(b"/* unterminated"), None);
        assert_eq!(sql_keyword(b"-- only a comment"), None);
        assert_eq!(sql_keyword(b"INSERT INTO t VALUES ('x')\0"), Some("INSERT"));
    }
}
