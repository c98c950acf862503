//! Stack scanning where there is no CFI (breakpad's "scan" frames): find the next slot
//! above sp that holds a plausible return address. Plausible means CFI covers the call
//! site and the bytes before it are a call instruction, which rejects most stale data
//! pointers into code.

/// Stack slots (8 bytes each) searched per recovery: 4 KiB.
pub(super) const SCAN_SLOTS: u64 = 512;

/// How far above a scanned return address's slot a frame pointer saved by the skipped
/// frames may point: 64 KiB of the caller's frames.
pub(super) const MAX_FRAME_BYTES: u64 = 64 << 10;

/// Frame records (`[saved rbp][return address]`) above a scanned return address tried
/// as its caller's frame pointer.
pub(super) const FRAME_RECORDS: usize = 2;

/// Frames walked ahead to judge a scanned return address with a candidate frame pointer.
pub(super) const LOOKAHEAD_FRAMES: usize = 12;

/// Scan recoveries per stack.
pub(super) const MAX_SCANS: usize = 4;

/// Longest x86_64 call instruction we recognise before a return address
/// (`ff 94 sib disp32`).
pub(super) const MAX_CALL_LEN: usize = 7;

/// Whether `code`, the bytes just before a candidate return address, ends with a call:
/// `e8 rel32`, or `ff /2` (indirect call, optionally REX-prefixed) through a register
/// or any memory operand.
pub(super) fn ends_with_call(code: &[u8]) -> bool {
    let n = code.len();
    if n >= 5 && code[n - 5] == 0xe8 {
        return true;
    }
    (2..=MAX_CALL_LEN.min(n)).any(|len| {
        let at = n - len;
        code[at] == 0xff && indirect_call_len(code[at + 1], code.get(at + 2).copied()) == Some(len)
    })
}

/// Length of `ff modrm [sib] [disp]` if `modrm` encodes `call` (`/2`).
fn indirect_call_len(modrm: u8, sib: Option<u8>) -> Option<usize> {
    if (modrm >> 3) & 7 != 2 {
        return None;
    }
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return Some(2);
    }
    let mut len = 2;
    if rm == 4 {
        len += 1;
        if md == 0 && sib? & 7 == 5 {
            len += 4;
        }
    }
    len += match (md, rm) {
        (0, 5) => 4,
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the common call encodings are recognised before a return address.
    #[test]
    fn recognises_call_instructions() {
        let calls: [&[u8]; 8] = [
            &[0x48, 0x89, 0xc7, 0xe8, 1, 2, 3, 4], // call rel32
            &[0x90, 0xff, 0xd0],                   // call *%rax
            &[0x41, 0xff, 0xd3],                   // call *%r11
            &[0xff, 0x15, 1, 2, 3, 4],             // call *x(%rip)
            &[0xff, 0x50, 0x08],                   // call *8(%rax)
            &[0xff, 0x54, 0x24, 0x08],             // call *8(%rsp)
            &[0xff, 0x94, 0xc1, 1, 2, 3, 4],       // call *x(%rcx,%rax,8)
            &[0xff, 0x10],                         // call *(%rax)
        ];
        for code in calls {
            assert!(ends_with_call(code), "{code:02x?}");
        }
    }

    /// Check that code not ending in a call (jumps, pushes, plain moves) is rejected.
    #[test]
    fn rejects_other_instructions() {
        let others: [&[u8]; 6] = [
            &[0xff, 0xe0],             // jmp *%rax
            &[0xff, 0x25, 1, 2, 3, 4], // jmp *x(%rip)
            &[0xff, 0x34, 0x24],       // push (%rsp)
            &[0x0f, 0xb6, 0x04, 0x24], // movzbl (%rsp),%eax
            &[0xe8, 1, 2, 3, 4, 0x90], // a call, then one more instruction
            &[],
        ];
        for code in others {
            assert!(!ends_with_call(code), "{code:02x?}");
        }
    }
}
