//! The `--env-file` evaluator and the `--env` option parser (oci-mkspec's `env` module,
//! compiled from its source). No input may panic or hang, and no variable name may be empty
//! or contain `=` (it would corrupt the spec's `KEY=VALUE` list).
#![no_main]

use oci_mkspec::env;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |k: &str| (k == "HOME").then(|| "/home/fuzz".to_string());
    if let Ok(vars) = env::eval_env_file(s, "fuzz.env", &lookup) {
        for (k, _) in vars {
            assert!(
                !k.is_empty() && !k.contains('='),
                "bad variable name {k:?} from {s:?}"
            );
        }
    }
    if let Ok(pairs) = env::parse_env_option(s) {
        for (k, _) in pairs {
            assert!(!k.contains('='), "bad variable name {k:?} from --env {s:?}");
        }
    }
});
