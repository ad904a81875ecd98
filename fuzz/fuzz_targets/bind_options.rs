//! `--bind` and `--mount` option parsing (oci-mkspec's `binds` and `mounts` modules, compiled
//! from their source). No input may panic; every bind that also passes `check_bind` (the
//! launcher-time check that runs before a spec is written) has an absolute destination and a
//! non-empty source.
#![no_main]

use oci_mkspec::binds;
use oci_mkspec::mounts;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for list in [binds::parse_bind(s), binds::parse_mount(s)]
        .into_iter()
        .flatten()
    {
        for b in list {
            if mounts::check_bind(&b).is_ok() {
                assert!(!b.source.is_empty(), "empty bind source passed from {s:?}");
                assert!(
                    b.destination.starts_with('/'),
                    "relative destination passed from {s:?}"
                );
            }
        }
    }
});
