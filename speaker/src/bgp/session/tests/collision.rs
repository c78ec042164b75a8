//! Connection collisions (RFC 4271 §6.8, RFC 4486 Cease subcode 7).

use super::*;

/// Both sides dial at once: we have an outbound and an inbound connection, both get an OPEN.
fn collision(router_id: Ipv4Addr) -> (Session, ConnId, ConnId, Vec<Action>) {
    let now = t0();
    let mut s = Session::new(
        SessionConfig {
            router_id,
            ..config()
        },
        1,
    );
    let (outbound, _) = dial(&mut s, now);
    let (inbound, _) = s.accept(now);
    let mut out = s.receive(now, outbound, &PeerOpen::new().bytes());
    out.extend(s.receive(now, inbound, &PeerOpen::new().bytes()));
    (s, outbound, inbound, out)
}

#[test]
fn collision_with_a_higher_local_identifier_keeps_our_outbound_connection() {
    let (mut s, outbound, inbound, out) = collision(Ipv4Addr::new(10, 0, 0, 9));
    assert_eq!(notifications(&out), vec![(6, 7)]);
    assert_eq!(
        sent_on(&out, inbound).len(),
        1,
        "the Cease goes on the inbound one"
    );
    assert!(out.contains(&Action::Close(inbound)));
    s.receive(t0(), outbound, &wire::encode_keepalive());
    assert_eq!(s.state(), State::Established);
    assert_eq!(
        s.counters().last_error,
        None,
        "a resolved collision is no error"
    );
}

#[test]
fn collision_with_a_lower_local_identifier_keeps_the_peers_connection() {
    // 9.0.0.1 < 10.0.0.1 (the peer): the connection the peer opened wins.
    let (mut s, outbound, inbound, out) = collision(Ipv4Addr::new(9, 0, 0, 1));
    assert_eq!(notifications(&out), vec![(6, 7)]);
    assert!(out.contains(&Action::Close(outbound)));
    assert!(!out.contains(&Action::Close(inbound)));
    s.receive(t0(), inbound, &wire::encode_keepalive());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn a_new_connection_while_established_is_closed_as_a_collision() {
    let now = t0();
    let mut s = session();
    let (established, _) = establish(&mut s, now, &PeerOpen::new());
    let (inbound, _) = s.accept(now);
    let out = s.receive(now, inbound, &PeerOpen::new().bytes());
    assert_eq!(notifications(&out), vec![(6, 7)]);
    assert!(out.contains(&Action::Close(inbound)));
    assert!(!out.contains(&Action::Close(established)));
    assert_eq!(s.state(), State::Established);
}
