//! The shell over loopback, without root: two shells, on 127.0.0.1 and 127.0.0.2, bring a
//! session up with each other, and stray datagrams are dropped and counted.

use std::net::UdpSocket as StdUdpSocket;

use super::*;

fn key(local: &str, peer: &str) -> PeerKey {
    PeerKey {
        peer: peer.parse().unwrap(),
        local: local.parse().unwrap(),
        interface: None,
        hop: Hop::Single,
    }
}

fn profile() -> Profile {
    Profile {
        timers: Timers {
            desired_min_tx: Duration::from_millis(20),
            required_min_rx: Duration::from_millis(20),
            detect_mult: 3,
        },
        passive: false,
        minimum_ttl: 254,
    }
}

async fn wait_for(rx: &mut watch::Receiver<BfdState>, want: State) -> BfdState {
    let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.state == want))
        .await
        .map(|r| r.map(|s| *s));
    match waited {
        Ok(Ok(s)) => s,
        _ => panic!("never {want}: {:?}", *rx.borrow()),
    }
}

/// Sends `bytes` to `to` with this TTL from a plain socket.
fn stray(bytes: &[u8], ttl: u32, to: &str) {
    let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_ttl(ttl).unwrap();
    socket.send_to(bytes, to).unwrap();
}

async fn settle(counter: &AtomicU64, at_least: u64) {
    for _ in 0..200 {
        if counter.load(Ordering::Relaxed) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("counter stayed at {}", counter.load(Ordering::Relaxed));
}

#[tokio::test]
async fn two_shells_come_up_drop_strays_and_see_admin_down() {
    let a = Bfd::spawn(1);
    let b = Bfd::spawn(2);
    let mut on_a = a
        .add_peer(key("127.0.0.1", "127.0.0.2"), profile())
        .await
        .unwrap();
    let mut on_b = b
        .add_peer(key("127.0.0.2", "127.0.0.1"), profile())
        .await
        .unwrap();
    let up = wait_for(&mut on_a, State::Up).await;
    wait_for(&mut on_b, State::Up).await;
    assert!((49152..=65535).contains(&up.source_port));
    assert_eq!(up.remote_discriminator, on_b.borrow().local_discriminator);

    let counters = b.counters();
    // Not TTL 255: dropped before decoding.
    let valid = packet::encode(&Packet {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 99,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 1_000_000,
        required_min_echo_rx_us: 0,
    });
    stray(&valid, 64, "127.0.0.2:3784");
    settle(&counters.bad_ttl, 1).await;
    // TTL 255 but garbage: counted by kind.
    stray(&[0x40; 24], 255, "127.0.0.2:3784");
    settle(&counters.decode_errors[DecodeError::Version(2).index()], 1).await;
    // A valid packet for a discriminator nobody has.
    let mut unknown = valid;
    if let Some(b) = unknown.get_mut(8..12) {
        b.copy_from_slice(&12345u32.to_be_bytes());
    }
    stray(&unknown, 255, "127.0.0.2:3784");
    settle(&counters.unknown_session, 1).await;
    assert_eq!(on_b.borrow().state, State::Up, "strays change nothing");

    a.remove_peer(&key("127.0.0.1", "127.0.0.2")).await;
    let down = wait_for(&mut on_b, State::Down).await;
    assert_eq!(down.diag, Diag::NeighborSignaledSessionDown);
    a.shutdown().await;
    b.shutdown().await;
}
