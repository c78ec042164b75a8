//! What an admin (or a pipeline) hands `ferrolb-operator validate -f` and the webhook: YAML
//! parsing, the schema's deserialization and validation never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ferrolb_api::manifest::parse_config(text) {
        let _ = ferrolb_api::validate(&config.spec);
        let _ = ferrolb_api::warnings(&config.spec, None);
    }
});
