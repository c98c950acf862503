//! Tracepoint format files (`/sys/kernel/tracing/events/<cat>/<name>/format`): where a
//! field sits in the record, for tracepoints whose layout changed across kernels.

/// Offset of field `name` in a tracepoint format text, if the tracepoint has it.
pub fn field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let field = decl.rsplit(' ').next()?;
        // `char comm[16]` and `__data_loc char[] comm` both name the field last.
        let field = field.split('[').next()?;
        if field != name {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")?.parse().ok())
    })
}

/// The format text of tracepoint `category:name`, if tracefs has it.
pub fn read(category: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(format!(
        "/sys/kernel/tracing/events/{category}/{name}/format"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK_VICTIM: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
";

    /// Check that field offsets are read from a real format file, and that absent or
    /// prefix-only names are not matched.
    #[test]
    fn finds_field_offsets() {
        assert_eq!(field_offset(MARK_VICTIM, "pid"), Some(8));
        assert_eq!(field_offset(MARK_VICTIM, "comm"), Some(12));
        assert_eq!(field_offset(MARK_VICTIM, "anon_rss"), Some(24));
        assert_eq!(field_offset(MARK_VICTIM, "shmem_rss"), None);
        assert_eq!(field_offset(MARK_VICTIM, "rss"), None);
    }

    /// Check that `child_pid` of `sched:sched_process_fork` is found in both layouts:
    /// fixed `char[16]` comms (5.10) and `__data_loc` comms (6.18, this machine).
    #[test]
    fn finds_fork_child_pid_in_both_layouts() {
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
        assert_eq!(field_offset(old, "child_pid"), Some(44));
        assert_eq!(field_offset(new, "child_pid"), Some(20));
        assert_eq!(field_offset(old, "child_comm"), Some(28));
    }
}
