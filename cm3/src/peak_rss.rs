//! A stage's peak resident memory, for `cm3 build`'s report: Linux's high-water mark
//! (`VmHWM` in `/proc/self/status`), reset before each stage by writing 5 to
//! `/proc/self/clear_refs` (Linux ≥ 4.0). Elsewhere, or where the reset is refused, `None`:
//! a peak that would include the earlier stages' is never reported as one stage's.

/// Resets the high-water mark to the current resident size; `false` if that is not possible.
pub(crate) fn reset() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The resident high-water mark in bytes since the last [`reset`].
pub(crate) fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Linux the mark follows an allocation up and comes back down after a reset.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_mark_sees_an_allocation_and_resets() {
        if !reset() {
            eprintln!("skipped: /proc/self/clear_refs refused the reset");
            return;
        }
        let before = peak_bytes().expect("VmHWM is readable on Linux");
        let big: Vec<u8> = vec![1; 64 << 20];
        std::hint::black_box(&big);
        let during = peak_bytes().expect("VmHWM");
        assert!(during >= before + (60 << 20), "{before} → {during}");
        drop(big);
        assert!(reset());
        let after = peak_bytes().expect("VmHWM");
        assert!(after + (60 << 20) <= during, "{during} → {after}");
    }
}
