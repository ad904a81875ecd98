//! `WWW-Authenticate` parsing (oci-fetch's `registry::auth`, compiled from its source).
//! No input may panic or hang; scheme and parameter names come out ASCII-lowercased (RFC 7235
//! tokens are case-insensitive ASCII).
#![no_main]

use oci_fetch::registry::auth;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for c in auth::parse_challenges(s) {
        assert!(
            !c.scheme.bytes().any(|b| b.is_ascii_uppercase()),
            "scheme not lowercased for {s:?}"
        );
        for k in c.params.keys() {
            assert!(
                !k.bytes().any(|b| b.is_ascii_uppercase()),
                "parameter name not lowercased for {s:?}"
            );
        }
    }
});
