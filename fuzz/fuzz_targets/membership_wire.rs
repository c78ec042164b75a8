//! Speaker liveness datagrams. The input is signed with the key before decoding (an attacker
//! without the key stops at the MAC check; this reaches the parser behind it, as a peer holding
//! the key, or a bug in one, would): decoding never panics, and a decoded message encodes back to
//! the same bytes' meaning.
#![no_main]

use ferrolb_speaker::membership::wire;
use libfuzzer_sys::fuzz_target;
use ring::hmac;

fuzz_target!(|data: &[u8]| {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"fuzzing key, 32 bytes long......");
    let mut signed = data.to_vec();
    signed.extend_from_slice(hmac::sign(&key, data).as_ref());
    if let Ok(message) = wire::decode(&signed, [&key]) {
        if let Ok(bytes) = wire::encode(&message, &key) {
            let again = wire::decode(&bytes, [&key]);
            assert_eq!(
                again.ok(),
                Some(message),
                "a decoded message does not round-trip"
            );
        }
    }
    let _ = wire::decode(data, [&key]);
});
