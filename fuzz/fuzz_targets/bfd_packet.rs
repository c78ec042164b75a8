//! BFD Control packets from the wire: decoding never panics; what decodes re-encodes to the same
//! mandatory section; and a session fed the decoded packets, interleaved with timers and
//! operator actions driven by the same bytes, never panics, never sends P and F together, never
//! reaches Up without having heard the peer, and never asks to be woken in the past.
#![no_main]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use ferrolb_speaker::bfd::packet::{self, MIN_LEN};
use ferrolb_speaker::bfd::{Action, Session, SessionConfig, State, Timers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The whole input as one datagram.
    if let Ok(p) = packet::decode(data) {
        assert_eq!(
            packet::encode(&p).get(..),
            data.get(..MIN_LEN),
            "a decoded packet does not re-encode to its bytes"
        );
    }

    // The input as a script: [op, arg, (datagram)]...
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let config = SessionConfig {
        timers: Timers {
            desired_min_tx: Duration::from_millis(10 * u64::from(flags % 16 + 1)),
            required_min_rx: Duration::from_millis(10 * u64::from(flags / 16 + 1)),
            detect_mult: flags % 5,
        },
        passive: flags & 1 == 1,
    };
    let Some(local) = NonZeroU32::new(7) else {
        return;
    };
    let mut now = Instant::now();
    let mut session = Session::new(config, local, u64::from(flags), now);
    let mut heard = false;
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        let actions = match op % 6 {
            0 | 1 => {
                // The next `arg` octets, as a datagram; its Your Discriminator patched to ours
                // half the time so that it gets past the session's own check.
                let n = usize::from(*arg).min(rest.len());
                let (bytes, tail) = rest.split_at(n);
                rest = tail;
                match packet::decode(bytes) {
                    Ok(mut p) => {
                        if op % 6 == 1 && p.your_discriminator != 0 {
                            p.your_discriminator = local.get();
                        }
                        if p.your_discriminator == 0 || p.your_discriminator == local.get() {
                            heard = true;
                        }
                        session.receive(now, &p)
                    }
                    Err(_) => Vec::new(),
                }
            }
            2 => {
                now += Duration::from_millis(u64::from(*arg) * 10);
                let mut actions = Vec::new();
                while let Some(d) = session.next_deadline().filter(|d| *d <= now) {
                    actions.extend(session.on_timer(d));
                    assert!(
                        session.next_deadline().is_none_or(|n| n > d),
                        "woken again at the same instant"
                    );
                }
                actions
            }
            3 => session.set_timers(
                now,
                Timers {
                    desired_min_tx: Duration::from_millis(u64::from(*arg) * 10),
                    required_min_rx: Duration::from_millis(u64::from(arg.rotate_left(4)) * 10),
                    detect_mult: arg % 7,
                },
            ),
            4 => session.admin_down(now),
            _ => session.admin_up(now),
        };
        for action in actions {
            match action {
                Action::Send(p) => {
                    assert!(!(p.poll && p.final_), "P and F together");
                    assert_eq!(p.my_discriminator, local.get());
                    // Never a packet the peer must drop (e.g. Your Discriminator 0 in Up).
                    assert_eq!(packet::decode(&packet::encode(&p)), Ok(p), "we sent {p:?}");
                }
                Action::StateChanged { to, .. } => {
                    if matches!(to, State::Init | State::Up) {
                        assert!(heard, "left Down without a packet from the peer");
                    }
                }
            }
        }
    }
});
