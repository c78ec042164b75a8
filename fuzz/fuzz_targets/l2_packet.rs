//! Frames from the wire (ARP, NDP): parsing never panics, and a parsed frame builds back into
//! bytes that parse to the same frame.
#![no_main]

use ferrolb_speaker::l2::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = packet::parse(data) {
        let again = packet::parse(&packet::build(&frame));
        assert_eq!(again, Ok(frame), "a parsed frame does not round-trip");
    }
});
