//! The shell over loopback TCP against a scripted peer: dial, establish, announce, cease; the
//! listener's routing of inbound connections. (A real router: `speaker/tests/bgp_netns.rs`.)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

use super::{Listener, Password, Peer, PeerConfig, PeerStatus};
use crate::announce::bgp::RouteAttributes;
use crate::bgp::State;
use crate::bgp::sim::{PeerOpen, PeerRib, config};
use crate::bgp::wire::{self, Message};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(5);

/// One whole message from `conn`, `None` at EOF.
async fn read_message(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut message = vec![0u8; wire::HEADER_LEN];
    timeout(WAIT, conn.read_exact(&mut message))
        .await
        .expect("a message in time")
        .ok()?;
    let len = usize::from(u16::from_be_bytes([message[16], message[17]]));
    message.resize(len, 0);
    timeout(WAIT, conn.read_exact(&mut message[wire::HEADER_LEN..]))
        .await
        .expect("the rest of the message in time")
        .ok()?;
    Some(message)
}

async fn wait_for_state(peer: &Peer, state: State) -> PeerStatus {
    let mut status = peer.status();
    timeout(WAIT, status.wait_for(|s| s.state == state))
        .await
        .expect("state reached in time")
        .expect("the peer task runs")
        .clone()
}

fn routes() -> BTreeMap<ipnet::IpNet, RouteAttributes> {
    let attributes = RouteAttributes {
        communities: [(64513 << 16) | 100].into(),
        ..RouteAttributes::default()
    };
    ["203.0.113.1/32", "203.0.113.2/32"]
        .into_iter()
        .map(|p| (p.parse().unwrap(), attributes.clone()))
        .collect()
}

#[tokio::test]
async fn a_peer_dials_announces_what_it_is_given_and_ceases_on_shutdown() {
    let router = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let mut peer_config = PeerConfig::new(config(), LOOPBACK);
    peer_config.port = router.local_addr().unwrap().port();
    let peer = Peer::spawn(peer_config, 1);
    let (mut conn, _) = timeout(WAIT, router.accept()).await.unwrap().unwrap();

    let open = read_message(&mut conn).await.unwrap();
    assert!(matches!(wire::decode(&open), Ok(Message::Open(_))));
    conn.write_all(&PeerOpen::new().bytes()).await.unwrap();
    conn.write_all(&wire::encode_keepalive()).await.unwrap();
    let status = wait_for_state(&peer, State::Established).await;
    assert!(status.established_since.is_some());

    peer.set_routes(routes());
    let mut rib = PeerRib::new(true);
    while rib.attributes() != routes() {
        rib.apply(&read_message(&mut conn).await.expect("UPDATEs"));
    }
    let mut status = peer.status();
    let status = timeout(WAIT, status.wait_for(|s| s.prefixes_announced == 2))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(status.updates_sent >= 1);

    peer.shutdown().await;
    let mut cease = None;
    while let Some(message) = read_message(&mut conn).await {
        if let Ok(Message::Notification(n)) = wire::decode(&message) {
            cease = Some((n.code, n.subcode));
        }
    }
    assert_eq!(
        cease,
        Some((6, 2)),
        "Cease / Administrative Shutdown, then EOF"
    );
}

#[tokio::test]
async fn a_refused_dial_is_reported_with_its_cause() {
    // A port nobody listens on: bind one, learn it, close it.
    let port = TcpListener::bind((LOOPBACK, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut peer_config = PeerConfig::new(config(), LOOPBACK);
    peer_config.port = port;
    let peer = Peer::spawn(peer_config, 1);
    let mut status = peer.status();
    let status = timeout(WAIT, status.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let error = status.last_error.unwrap();
    assert!(
        error.starts_with(&format!("connecting to 127.0.0.1:{port}: ")),
        "{error}"
    );
    assert_ne!(status.state, State::Established);
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn the_listener_hands_a_peers_connection_to_it_and_closes_strangers() {
    let listener = Listener::bind(SocketAddr::new(LOOPBACK, 0)).unwrap();
    let mut passive = config();
    passive.passive = true;
    let peer = Peer::spawn(PeerConfig::new(passive, LOOPBACK), 1);
    listener.add_peer(&peer).unwrap();

    // 127.0.0.2 is loopback too on Linux, but no peer of ours.
    let mut stranger = connect_from(Ipv4Addr::new(127, 0, 0, 2), listener.local_addr()).await;
    assert_eq!(
        read_message(&mut stranger).await,
        None,
        "a stranger is closed"
    );

    let mut conn = connect_from(Ipv4Addr::LOCALHOST, listener.local_addr()).await;
    let open = read_message(&mut conn).await.unwrap();
    assert!(matches!(wire::decode(&open), Ok(Message::Open(_))));
    conn.write_all(&PeerOpen::new().bytes()).await.unwrap();
    conn.write_all(&wire::encode_keepalive()).await.unwrap();
    wait_for_state(&peer, State::Established).await;

    listener.remove_peer(LOOPBACK).unwrap();
    let mut again = connect_from(Ipv4Addr::LOCALHOST, listener.local_addr()).await;
    assert_eq!(
        read_message(&mut again).await,
        None,
        "a removed peer is closed"
    );
    peer.shutdown().await;
}

#[test]
fn a_password_never_shows_in_debug_output() {
    let mut peer = PeerConfig::new(config(), LOOPBACK);
    peer.password = Some(Password::new("s3cret"));
    let text = format!("{peer:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}
