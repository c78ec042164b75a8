use proptest::prelude::*;

use super::*;

fn packet() -> Packet {
    Packet {
        diag: Diag::None,
        state: State::Up,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 0x0102_0304,
        your_discriminator: 0x0506_0708,
        desired_min_tx_us: 300_000,
        required_min_rx_us: 200_000,
        required_min_echo_rx_us: 0,
    }
}

/// `encode`, then `edit` the bytes.
fn bytes_with(p: &Packet, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = encode(p).to_vec();
    edit(&mut bytes);
    bytes
}

#[test]
fn encodes_the_mandatory_section_as_the_rfc_draws_it() {
    let p = Packet {
        diag: Diag::NeighborSignaledSessionDown,
        state: State::Init,
        poll: true,
        ..packet()
    };
    assert_eq!(
        encode(&p),
        [
            0x23, 0xa0, 3, 24, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x04, 0x93, 0xe0, 0, 0x03, 0x0d, 0x40, 0,
            0, 0, 0
        ]
    );
}

#[test]
fn every_flag_and_state_survives_a_round_trip() {
    for state in State::ALL {
        for bits in 0u8..16 {
            let p = Packet {
                state,
                poll: bits & 1 != 0,
                final_: bits & 2 != 0,
                control_plane_independent: bits & 4 != 0,
                demand: bits & 8 != 0,
                ..packet()
            };
            assert_eq!(decode(&encode(&p)), Ok(p), "{p:?}");
        }
    }
}

#[test]
fn version_other_than_1_is_refused() {
    for version in [0u8, 2, 7] {
        let bytes = bytes_with(&packet(), |b| b[0] = (version << 5) | (b[0] & 0x1f));
        assert_eq!(decode(&bytes), Err(DecodeError::Version(version)));
    }
}

#[test]
fn length_field_below_24_is_refused() {
    let bytes = bytes_with(&packet(), |b| b[3] = 23);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::Length {
            length: 23,
            datagram: 24
        })
    );
}

#[test]
fn length_field_beyond_the_datagram_is_refused() {
    let bytes = bytes_with(&packet(), |b| b[3] = 25);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::Length {
            length: 25,
            datagram: 24
        })
    );
}

#[test]
fn datagram_shorter_than_the_mandatory_section_is_refused() {
    let bytes = encode(&packet());
    assert_eq!(
        decode(&bytes[..23]),
        Err(DecodeError::Length {
            length: 24,
            datagram: 23
        })
    );
    assert_eq!(
        decode(&bytes[..2]),
        Err(DecodeError::Length {
            length: 0,
            datagram: 2
        })
    );
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Length {
            length: 0,
            datagram: 0
        })
    );
}

#[test]
fn octets_beyond_the_length_field_are_ignored() {
    let bytes = bytes_with(&packet(), |b| b.extend_from_slice(&[0xff; 8]));
    assert_eq!(decode(&bytes), Ok(packet()));
}

#[test]
fn authentication_bit_with_length_below_26_is_a_length_error() {
    let bytes = bytes_with(&packet(), |b| {
        b[1] |= 0x04;
        b.extend_from_slice(&[1, 2]);
    });
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::Length {
            length: 24,
            datagram: 26
        })
    );
}

#[test]
fn authentication_bit_is_refused_as_unsupported() {
    // Simple Password (type 1), length 5, key id 1, password "ab".
    let bytes = bytes_with(&packet(), |b| {
        b[1] |= 0x04;
        b[3] = 29;
        b.extend_from_slice(&[1, 5, 1, b'a', b'b']);
    });
    assert_eq!(decode(&bytes), Err(DecodeError::Authenticated));
}

#[test]
fn detect_mult_0_is_refused() {
    let bytes = bytes_with(&packet(), |b| b[2] = 0);
    assert_eq!(decode(&bytes), Err(DecodeError::ZeroDetectMult));
}

#[test]
fn multipoint_bit_is_refused() {
    let bytes = bytes_with(&packet(), |b| b[1] |= 0x01);
    assert_eq!(decode(&bytes), Err(DecodeError::Multipoint));
}

#[test]
fn my_discriminator_0_is_refused() {
    let p = Packet {
        my_discriminator: 0,
        ..packet()
    };
    assert_eq!(decode(&encode(&p)), Err(DecodeError::ZeroMyDiscriminator));
}

#[test]
fn your_discriminator_0_is_refused_in_init_and_up_only() {
    for state in State::ALL {
        let p = Packet {
            state,
            your_discriminator: 0,
            ..packet()
        };
        let want = match state {
            State::Init | State::Up => Err(DecodeError::ZeroYourDiscriminator(state)),
            State::Down | State::AdminDown => Ok(p),
        };
        assert_eq!(decode(&encode(&p)), want, "{state}");
    }
}

#[test]
fn checks_run_in_the_order_of_the_rfc() {
    // Version is judged before length, length before the multiplier, and so on.
    let bytes = bytes_with(&packet(), |b| {
        b[0] = 0x40;
        b[3] = 0;
    });
    assert_eq!(decode(&bytes), Err(DecodeError::Version(2)));
    let bytes = bytes_with(&packet(), |b| {
        b[2] = 0;
        b[3] = 0;
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::Length { .. })));
    let bytes = bytes_with(&packet(), |b| {
        b[1] |= 0x01;
        b[2] = 0;
    });
    assert_eq!(decode(&bytes), Err(DecodeError::ZeroDetectMult));
}

#[test]
fn labels_are_listed_in_index_order() {
    let errors = [
        DecodeError::Version(0),
        DecodeError::Length {
            length: 0,
            datagram: 0,
        },
        DecodeError::ZeroDetectMult,
        DecodeError::Multipoint,
        DecodeError::ZeroMyDiscriminator,
        DecodeError::ZeroYourDiscriminator(State::Up),
        DecodeError::Authenticated,
    ];
    for e in errors {
        assert_eq!(DecodeError::LABELS[e.index()], e.label());
    }
}

#[test]
fn reserved_diagnostics_are_kept() {
    let p = Packet {
        diag: Diag::Reserved(31),
        ..packet()
    };
    assert_eq!(decode(&encode(&p)).map(|p| p.diag), Ok(Diag::Reserved(31)));
    assert_eq!(Diag::from_code(7), Diag::AdministrativelyDown);
    assert_eq!(Diag::AdministrativelyDown.code(), 7);
}

fn state() -> impl Strategy<Value = State> {
    proptest::sample::select(&State::ALL[..])
}

prop_compose! {
    /// Any packet the decoder accepts.
    fn valid_packet()(
        diag in 0u8..32,
        state in state(),
        poll: bool,
        final_: bool,
        control_plane_independent: bool,
        demand: bool,
        detect_mult in 1u8..,
        my_discriminator in 1u32..,
        your_discriminator: u32,
        desired_min_tx_us: u32,
        required_min_rx_us: u32,
        required_min_echo_rx_us: u32,
    ) -> Packet {
        let your_discriminator = if matches!(state, State::Init | State::Up) {
            your_discriminator.max(1)
        } else {
            your_discriminator
        };
        Packet {
            diag: Diag::from_code(diag),
            state,
            poll,
            final_,
            control_plane_independent,
            demand,
            detect_mult,
            my_discriminator,
            your_discriminator,
            desired_min_tx_us,
            required_min_rx_us,
            required_min_echo_rx_us,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_the_packet(p in valid_packet()) {
        prop_assert_eq!(decode(&encode(&p)), Ok(p));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&bytes);
    }

    /// Bytes that start like a packet (version 1, length 24) get past the framing checks, so
    /// the later checks see arbitrary values too; whatever decodes re-encodes to the same
    /// mandatory section (bar the A and M bits, which decoding refuses).
    #[test]
    fn plausible_bytes_decode_to_what_they_say(mut bytes in proptest::collection::vec(any::<u8>(), 24..40)) {
        if let Some(b) = bytes.first_mut() {
            *b = (1 << 5) | (*b & 0x1f);
        }
        if let Some(b) = bytes.get_mut(3) {
            *b = 24;
        }
        if let Ok(p) = decode(&bytes) {
            prop_assert_eq!(&encode(&p)[..], &bytes[..24]);
        }
    }
}
