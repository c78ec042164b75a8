use std::net::Ipv4Addr;

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = header(u16::try_from(HEADER_LEN + body.len()).unwrap(), kind);
    v.extend_from_slice(body);
    v
}

fn open() -> Open {
    Open {
        version: 4,
        my_as: 65001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::Multiprotocol { afi: 2, safi: 1 },
            Capability::RouteRefresh,
            Capability::FourOctetAs(4_200_000_000),
            Capability::GracefulRestart {
                flags: 8,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: 1,
                    safi: 1,
                    flags: 0x80,
                }],
            },
            Capability::Unknown {
                code: 73,
                value: b"router".to_vec(),
            },
        ],
        unsupported_params: Vec::new(),
    }
}

#[test]
fn bad_marker_is_connection_not_synchronized() {
    let mut bytes = encode_keepalive();
    bytes[3] = 0;
    assert_eq!(frame_length(&bytes), Err(Notification::new(1, 1)));
    assert_eq!(
        frame_length(&bytes[..5]),
        Err(Notification::new(1, 1)),
        "judged before the header is complete"
    );
}

#[test]
fn length_beyond_4096_is_bad_message_length_with_the_length_as_data() {
    let bytes = header(4097, 2);
    assert_eq!(
        frame_length(&bytes),
        Err(Notification::with_data(1, 2, &4097u16.to_be_bytes()))
    );
}

#[test]
fn length_below_the_minimum_of_the_type_is_bad_message_length() {
    for (kind, len) in [(1, 28), (2, 22), (3, 20), (4, 20), (4, 18), (5, 18)] {
        assert_eq!(
            frame_length(&header(len, kind)),
            Err(Notification::with_data(1, 2, &len.to_be_bytes())),
            "type {kind} length {len}"
        );
    }
}

#[test]
fn unknown_type_is_bad_message_type_with_the_type_as_data() {
    assert_eq!(
        frame_length(&header(19, 9)),
        Err(Notification::with_data(1, 3, &[9]))
    );
}

#[test]
fn incomplete_message_asks_for_more() {
    let bytes = encode_open(&open());
    for cut in [0, 10, 18, 19, bytes.len() - 1] {
        assert_eq!(frame_length(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(frame_length(&bytes), Ok(Some(bytes.len())));
}

#[test]
fn open_round_trips_with_every_capability() {
    assert_eq!(decode(&encode_open(&open())), Ok(Message::Open(open())));
}

#[test]
fn open_of_another_version_is_unsupported_version_naming_version_4() {
    let mut bytes = encode_open(&open());
    bytes[HEADER_LEN] = 3;
    assert_eq!(decode(&bytes), Err(Notification::with_data(2, 1, &[0, 4])));
}

#[test]
fn open_keeps_non_capability_parameters_for_the_session_to_refuse() {
    // One optional parameter of type 1 (deprecated authentication), 2 octets.
    let body = [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 4, 1, 2, 0xab, 0xcd];
    let Ok(Message::Open(open)) = decode(&framed(1, &body)) else {
        panic!("not an OPEN");
    };
    assert_eq!(open.unsupported_params, vec![1]);
}

#[test]
fn open_with_overrunning_parameters_is_an_open_error() {
    let body = [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 4, 2, 9, 1, 4];
    assert_eq!(decode(&framed(1, &body)), Err(Notification::new(2, 0)));
}

#[test]
fn open_without_multiprotocol_capabilities_implies_ipv4_unicast() {
    let open = Open {
        capabilities: vec![Capability::FourOctetAs(65001)],
        ..open()
    };
    assert_eq!(open.families(), vec![Family::Ipv4Unicast]);
    assert_eq!(open.peer_as(), 65001);
}

#[test]
fn notification_round_trips_with_data() {
    let n = Notification::with_data(6, 2, b"maintenance");
    assert_eq!(
        decode(&encode_notification(&n)),
        Ok(Message::Notification(n))
    );
}

#[test]
fn keepalive_and_route_refresh_round_trip() {
    assert_eq!(decode(&encode_keepalive()), Ok(Message::Keepalive));
    assert_eq!(
        decode(&encode_route_refresh(Family::Ipv6Unicast)),
        Ok(Message::RouteRefresh { afi: 2, safi: 1 })
    );
}

#[test]
fn route_refresh_of_wrong_length_is_route_refresh_invalid_length() {
    let bytes = framed(5, &[0, 1, 0, 1, 0]);
    let err = decode(&bytes).unwrap_err();
    assert_eq!((err.code, err.subcode), (7, 1));
    assert_eq!(
        err.data, bytes,
        "the data is the whole message (RFC 7313 §5)"
    );
}

#[test]
fn update_is_counted_not_kept() {
    // Withdraw 10.0.0.0/8; ORIGIN; announce 192.0.2.0/24 and 198.51.100.0/24.
    let mut body = vec![0, 2, 8, 10, 0, 4, 0x40, 1, 1, 0];
    body.extend_from_slice(&[24, 192, 0, 2, 24, 198, 51, 100]);
    assert_eq!(
        decode(&framed(2, &body)),
        Ok(Message::Update(UpdateSummary {
            withdrawn: 1,
            announced: 2,
            end_of_rib: None
        }))
    );
}

#[test]
fn update_with_overrunning_lengths_is_malformed_attribute_list() {
    for body in [
        vec![0, 9, 8, 10, 0, 0],
        vec![0, 0, 0, 9, 0x40, 1, 1, 0],
        vec![0, 0, 0, 3, 0x40, 1, 5],
    ] {
        assert_eq!(
            decode(&framed(2, &body)),
            Err(Notification::new(3, 1)),
            "{body:?}"
        );
    }
}

#[test]
fn update_with_a_prefix_longer_than_its_family_is_invalid_network_field() {
    let body = [0, 0, 0, 0, 33, 10, 0, 0, 0, 0];
    assert_eq!(decode(&framed(2, &body)), Err(Notification::new(3, 10)));
}

#[test]
fn end_of_rib_markers_are_recognised() {
    let ipv4 = framed(2, &[0, 0, 0, 0]);
    let ipv6 = framed(2, &[0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
    for (bytes, family) in [(ipv4, Family::Ipv4Unicast), (ipv6, Family::Ipv6Unicast)] {
        let Ok(Message::Update(summary)) = decode(&bytes) else {
            panic!("not an UPDATE");
        };
        assert_eq!(summary.end_of_rib, Some(family));
    }
}

#[test]
fn prefixes_encode_only_their_significant_octets() {
    let mut out = Vec::new();
    for p in ["10.0.0.0/8", "192.0.2.1/32", "0.0.0.0/0", "2001:db8::/33"] {
        push_prefix(&mut out, &p.parse::<IpNet>().unwrap());
    }
    assert_eq!(
        out,
        [8, 10, 32, 192, 0, 2, 1, 0, 33, 0x20, 0x01, 0x0d, 0xb8, 0]
    );
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = frame_length(&bytes);
        let _ = decode(&bytes);
    }

    #[test]
    fn decoding_well_framed_garbage_never_panics(
        kind in 1u8..=5,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let _ = decode(&framed(kind, &body));
    }

    #[test]
    fn decoding_updates_with_random_attributes_never_panics(
        attrs in proptest::collection::vec(
            (any::<u8>(), prop_oneof![Just(14u8), Just(15u8), any::<u8>()],
             proptest::collection::vec(any::<u8>(), 0..40)),
            0..6),
        nlri in proptest::collection::vec(any::<u8>(), 0..30),
    ) {
        let mut a = Vec::new();
        for (flags, code, value) in &attrs {
            push_attribute(&mut a, *flags, *code, value);
        }
        let mut body = vec![0, 0];
        body.extend_from_slice(&u16::try_from(a.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&a);
        body.extend_from_slice(&nlri);
        let _ = decode(&framed(2, &body));
    }

    #[test]
    fn open_round_trips(
        my_as in any::<u16>(),
        hold in any::<u16>(),
        id in any::<u32>(),
        asn in any::<u32>(),
        unknown in proptest::collection::vec((100u8..=255, proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
    ) {
        let mut capabilities = vec![Capability::FourOctetAs(asn), Capability::RouteRefresh];
        capabilities.extend(unknown.into_iter().map(|(code, value)| Capability::Unknown { code, value }));
        let open = Open {
            version: 4,
            my_as,
            hold_time: hold,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
            unsupported_params: Vec::new(),
        };
        prop_assert_eq!(decode(&encode_open(&open)), Ok(Message::Open(open)));
    }
}
