//! /etc/subuid and /etc/subgid parsing (`common::subid`): malformed files must give an error,
//! never a panic, and a range found must be non-empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for (name, id) in [("tester", 1000u32), ("root", 0)] {
        if let Ok(Some(r)) = common::subid::find_range(s, "/etc/subuid", name, id) {
            assert!(r.count > 0, "empty range {r:?} accepted from {s:?}");
            assert!(
                r.start.checked_add(r.count).is_some(),
                "range {r:?} wraps past u32::MAX, accepted from {s:?}"
            );
        }
    }
});
