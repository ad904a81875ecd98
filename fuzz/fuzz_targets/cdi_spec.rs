//! A CDI spec file, as JSON and as YAML (oci-mkspec's `cdi` registry parser and validation):
//! no input may panic or hang, and a spec that validates has a kind and at least one device.
#![no_main]

use oci_mkspec::cdi::registry;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["fuzz.json", "fuzz.yaml"] {
        if let Ok(spec) = registry::parse(name, data)
            && spec.validate().is_ok()
        {
            assert!(spec.kind.contains('/') && !spec.devices.is_empty());
        }
    }
});
