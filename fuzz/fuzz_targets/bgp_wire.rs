//! A BGP peer's bytes: framing and decoding never panic, and a framed message is never longer
//! than the 4096 octets allowed without Extended Messages.
#![no_main]

use ferrolb_speaker::bgp::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = wire::frame_length(data) {
        assert!((19..=4096).contains(&len), "framed {len} octets");
        if let Some(message) = data.get(..len) {
            let _ = wire::decode(message);
        }
    }
    let _ = wire::decode(data);
});
