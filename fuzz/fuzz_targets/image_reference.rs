//! Image-reference parsing (oci-fetch's `reference` module, compiled from its source).
//! No input may panic; an accepted docker reference must survive its own canonical form.
#![no_main]

use oci_fetch::reference;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = reference::parse(s);
    if let Ok(r) = reference::parse_docker(s) {
        let canon = r.canonical();
        let again = reference::parse_docker(&canon)
            .unwrap_or_else(|e| panic!("canonical form {canon:?} of {s:?} does not parse: {e}"));
        assert_eq!(
            again.canonical(),
            canon,
            "canonical form of {s:?} is not stable"
        );
        let _ = (r.api_host(), r.manifest_ref());
    }
});
