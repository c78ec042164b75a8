use super::*;
use proptest::prelude::*;

const A: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x20, 0x30]);
const B: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x20, 0x31]);

/// A request as arping sends it on the wire (who-has 198.51.100.250 tell 198.51.100.202).
const ARP_REQUEST_BYTES: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x31, 0x08, 0x06, // eth
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op
    0x02, 0x00, 0x5e, 0x10, 0x20, 0x31, 198, 51, 100, 202, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 198, 51, 100, 250, // target
];

fn sample_ns() -> Frame {
    let target: Ipv6Addr = "2001:db8:fe::250".parse().unwrap_or(Ipv6Addr::LOCALHOST);
    Frame::Ndp(NdpFrame {
        eth: Ethernet {
            dst: MacAddr::ipv6_multicast(solicited_node(target)),
            src: B,
        },
        src: "2001:db8:fe::2".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        dst: solicited_node(target),
        hop_limit: 255,
        message: Ndp::Solicitation(NeighborSolicitation {
            target,
            source_mac: Some(B),
        }),
    })
}

#[test]
fn parses_an_arp_request_from_the_wire() {
    let frame = parse(&ARP_REQUEST_BYTES).unwrap();
    assert_eq!(
        frame,
        Frame::Arp(ArpFrame {
            eth: Ethernet {
                dst: MacAddr::BROADCAST,
                src: B
            },
            arp: Arp {
                op: ArpOp::Request,
                sender_mac: B,
                sender_ip: Ipv4Addr::new(198, 51, 100, 202),
                target_mac: MacAddr::ZERO,
                target_ip: Ipv4Addr::new(198, 51, 100, 250),
            }
        })
    );
}

#[test]
fn arp_is_built_byte_exact_and_padded_to_60_bytes() {
    let frame = parse(&ARP_REQUEST_BYTES).unwrap();
    let bytes = build(&frame);
    assert_eq!(bytes.len(), 60);
    assert_eq!(&bytes[..42], &ARP_REQUEST_BYTES[..]);
    assert!(bytes[42..].iter().all(|b| *b == 0));
}

#[test]
fn arp_for_other_hardware_or_protocol_or_opcode_is_rejected() {
    for (at, value) in [(15, 6u8), (17, 0xdd), (18, 8), (19, 16), (21, 3)] {
        let mut bytes = ARP_REQUEST_BYTES;
        bytes[at] = value;
        assert_eq!(parse(&bytes), Err(ParseError::Arp), "byte {at} = {value}");
    }
}

#[test]
fn vlan_tagged_and_ipv4_frames_are_rejected_by_ethertype() {
    let mut bytes = ARP_REQUEST_BYTES;
    bytes[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(parse(&bytes), Err(ParseError::EtherType(0x8100)));
    bytes[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse(&bytes), Err(ParseError::EtherType(0x0800)));
}

#[test]
fn ns_layout_matches_rfc_4861() {
    let bytes = build(&sample_ns());
    assert_eq!(bytes.len(), 14 + 40 + 32);
    assert_eq!(&bytes[12..14], &[0x86, 0xdd]);
    assert_eq!(bytes[14] >> 4, 6);
    assert_eq!(&bytes[18..20], &32u16.to_be_bytes(), "payload length");
    assert_eq!(bytes[20], 58, "next header ICMPv6");
    assert_eq!(bytes[21], 255, "hop limit");
    assert_eq!(bytes[54], 135, "type");
    assert_eq!(bytes[55], 0, "code");
    assert_eq!(&bytes[86 - 8..86 - 6], &[1, 1], "SLLA option, 8 bytes");
    assert_eq!(&bytes[86 - 6..], &B.0);
    // Destination MAC of the solicited-node group ff02::1:ff00:250.
    assert_eq!(&bytes[0..6], &[0x33, 0x33, 0xff, 0x00, 0x02, 0x50]);
}

#[test]
fn checksum_of_built_message_verifies_and_a_flipped_bit_is_caught() {
    let bytes = build(&sample_ns());
    let Frame::Ndp(f) = sample_ns() else {
        unreachable!()
    };
    assert_eq!(icmpv6_checksum(f.src, f.dst, &bytes[54..]), 0);
    for at in 54..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        assert!(parse(&bad).is_err(), "flipped bit at {at} accepted");
    }
}

#[test]
fn checksum_matches_a_hand_computed_value() {
    // Pseudo-header of ::1 -> ::2, length 8, next header 58, plus message 0x8000 0x0000 ...:
    // 1 + 2 + 8 + 58 + 0x8000 = 0x8045, complement 0x7fba.
    let msg = [0x80, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        icmpv6_checksum(Ipv6Addr::LOCALHOST, "::2".parse().unwrap(), &msg),
        0x7fba
    );
}

#[test]
fn other_icmpv6_types_nonzero_code_and_extension_headers_are_rejected() {
    let bytes = build(&sample_ns());
    let mut echo = bytes.clone();
    echo[54] = 128;
    assert_eq!(parse(&echo), Err(ParseError::NotNdp));
    let mut code = bytes.clone();
    code[55] = 1;
    assert_eq!(parse(&code), Err(ParseError::NotNdp));
    let mut hop_by_hop = bytes.clone();
    hop_by_hop[20] = 0;
    assert_eq!(parse(&hop_by_hop), Err(ParseError::NotIcmpv6));
    let mut v4 = bytes;
    v4[14] = 0x45;
    assert_eq!(parse(&v4), Err(ParseError::NotIcmpv6));
}

#[test]
fn zero_length_option_is_rejected() {
    let Frame::Ndp(f) = sample_ns() else {
        unreachable!()
    };
    let mut bytes = build(&sample_ns());
    bytes[86 - 7] = 0; // option length 0
    bytes[56..58].copy_from_slice(&[0, 0]);
    let sum = icmpv6_checksum(f.src, f.dst, &bytes[54..]);
    bytes[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(parse(&bytes), Err(ParseError::Option));
}

#[test]
fn unknown_options_are_skipped() {
    let Frame::Ndp(f) = sample_ns() else {
        unreachable!()
    };
    let mut bytes = build(&sample_ns());
    // Append a nonce option (type 14, 8 bytes) and fix lengths and checksum.
    bytes.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
    bytes[18..20].copy_from_slice(&40u16.to_be_bytes());
    bytes[56..58].copy_from_slice(&[0, 0]);
    let sum = icmpv6_checksum(f.src, f.dst, &bytes[54..]);
    bytes[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(parse(&bytes), Ok(sample_ns()));
}

#[test]
fn ethernet_padding_after_the_ipv6_payload_is_ignored() {
    let mut bytes = build(&sample_ns());
    bytes.extend_from_slice(&[0xaa; 10]);
    assert_eq!(parse(&bytes), Ok(sample_ns()));
}

#[test]
fn payload_length_beyond_the_frame_is_truncated() {
    let mut bytes = build(&sample_ns());
    bytes[18..20].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(parse(&bytes), Err(ParseError::Truncated));
}

#[test]
fn every_truncation_of_valid_frames_is_rejected() {
    for bytes in [ARP_REQUEST_BYTES.to_vec(), build(&sample_ns())] {
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
    }
}

#[test]
fn na_flags_round_trip_one_by_one() {
    for (router, solicited, override_flag) in [
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ] {
        let frame = Frame::Ndp(NdpFrame {
            eth: Ethernet { dst: B, src: A },
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
            hop_limit: 255,
            message: Ndp::Advertisement(NeighborAdvertisement {
                router,
                solicited,
                override_flag,
                target: "2001:db8::1".parse().unwrap(),
                target_mac: None,
            }),
        });
        let bytes = build(&frame);
        let expected =
            (u8::from(router) << 7) | (u8::from(solicited) << 6) | (u8::from(override_flag) << 5);
        assert_eq!(bytes[58], expected);
        assert_eq!(parse(&bytes), Ok(frame));
    }
}

#[test]
fn mac_addresses_print_and_parse() {
    assert_eq!(A.to_string(), "02:00:5e:10:20:30");
    assert_eq!("02:00:5E:10:20:30\n".parse::<MacAddr>(), Ok(A));
    for bad in [
        "",
        "02:00:5e:10:20",
        "02:00:5e:10:20:30:40",
        "0g:00:00:00:00:00",
        "002:0:0:0:0:0",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
    }
    assert!(MacAddr::BROADCAST.is_multicast() && !A.is_multicast());
}

#[test]
fn solicited_node_group_keeps_the_low_24_bits() {
    let addr: Ipv6Addr = "2001:db8:fe::1:2345:6789".parse().unwrap();
    assert_eq!(
        solicited_node(addr),
        "ff02::1:ff45:6789".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        MacAddr::ipv6_multicast(solicited_node(addr)),
        MacAddr([0x33, 0x33, 0xff, 0x45, 0x67, 0x89])
    );
}

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn ethernet() -> impl Strategy<Value = Ethernet> {
    (mac(), mac()).prop_map(|(dst, src)| Ethernet { dst, src })
}

fn frame() -> impl Strategy<Value = Frame> {
    let arp = (
        ethernet(),
        any::<bool>(),
        mac(),
        any::<[u8; 4]>(),
        mac(),
        any::<[u8; 4]>(),
    )
        .prop_map(|(eth, request, sender_mac, sip, target_mac, tip)| {
            Frame::Arp(ArpFrame {
                eth,
                arp: Arp {
                    op: if request {
                        ArpOp::Request
                    } else {
                        ArpOp::Reply
                    },
                    sender_mac,
                    sender_ip: sip.into(),
                    target_mac,
                    target_ip: tip.into(),
                },
            })
        });
    let ns = (any::<[u8; 16]>(), proptest::option::of(mac())).prop_map(|(t, source_mac)| {
        Ndp::Solicitation(NeighborSolicitation {
            target: t.into(),
            source_mac,
        })
    });
    let na = (
        any::<(bool, bool, bool)>(),
        any::<[u8; 16]>(),
        proptest::option::of(mac()),
    )
        .prop_map(|((router, solicited, override_flag), t, target_mac)| {
            Ndp::Advertisement(NeighborAdvertisement {
                router,
                solicited,
                override_flag,
                target: t.into(),
                target_mac,
            })
        });
    let ndp = (
        ethernet(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u8>(),
        prop_oneof![ns, na],
    )
        .prop_map(|(eth, src, dst, hop_limit, message)| {
            Frame::Ndp(NdpFrame {
                eth,
                src: src.into(),
                dst: dst.into(),
                hop_limit,
                message,
            })
        });
    prop_oneof![arp, ndp]
}

proptest! {
    #[test]
    fn every_frame_round_trips(f in frame()) {
        prop_assert_eq!(parse(&build(&f)), Ok(f));
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_rejected(f in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = build(&f);
        // ARP frames carry padding; only cuts inside the packet itself must fail.
        let meaningful = match f { Frame::Arp(_) => 42, Frame::Ndp(_) => bytes.len() };
        let len = cut.index(meaningful);
        prop_assert!(parse(&bytes[..len]).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn garbage_behind_a_valid_header_never_panics_and_checksums_guard_ndp(
        f in frame(),
        noise in proptest::collection::vec(any::<u8>(), 0..100),
        at in any::<prop::sample::Index>(),
    ) {
        let mut bytes = build(&f);
        let start = at.index(bytes.len());
        for (b, n) in bytes[start..].iter_mut().zip(&noise) {
            *b = *n;
        }
        if let Ok(Frame::Ndp(parsed)) = parse(&bytes) {
            // Whatever was accepted re-serializes to a message with a valid checksum.
            let rebuilt = build(&Frame::Ndp(parsed));
            prop_assert_eq!(icmpv6_checksum(parsed.src, parsed.dst, &rebuilt[54..]), 0);
        }
    }
}
