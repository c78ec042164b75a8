//! The OPEN exchange: what we offer, how we judge the peer's (RFC 4271 §6.2, RFC 5492, RFC
//! 6793), and connection collisions (§6.8).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Action, ConnId, ConnState, Direction, Negotiated, Session};
use crate::bgp::wire::{
    self, AS_TRANS, Capability, Family, GracefulRestartFamily, Notification, Open, VERSION, code,
};

/// Graceful Restart flags (RFC 4724 §3): Restart State (the high bit of the 4 flag bits) and,
/// per family, Forwarding State.
const RESTART_STATE: u8 = 0x8;
const FORWARDING_STATE: u8 = 0x80;
/// The restart time is 12 bits.
const MAX_RESTART_TIME: u16 = 0x0fff;

impl Session {
    pub(super) fn open_message(&self) -> Vec<u8> {
        let mut capabilities: Vec<Capability> = self
            .config
            .families
            .iter()
            .map(|&f| Capability::from(f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(self.config.local_asn));
        if let Some(restart_time) = self.config.graceful_restart {
            capabilities.push(self.graceful_restart_capability(restart_time));
        }
        wire::encode_open(&Open {
            version: VERSION,
            my_as: u16::try_from(self.config.local_asn).unwrap_or(AS_TRANS),
            hold_time: self.config.hold_time_secs(),
            bgp_id: self.config.router_id,
            capabilities,
            unsupported_params: Vec::new(),
        })
    }

    /// RFC 4724 §3 as a speaker that only announces: Restart State set on this session's first
    /// OPEN (a new session is a new process, or new settings: either way the peer must not wait
    /// for routes from us before sending its own), and Forwarding State preserved for every
    /// family, since the node forwards to its Services whether or not the speaker runs. No
    /// Notification bit (RFC 8538): every NOTIFICATION we send ends the peer's promise.
    fn graceful_restart_capability(&self, restart_time: Duration) -> Capability {
        let restart_state = if self.counters.established == 0 {
            RESTART_STATE
        } else {
            0
        };
        Capability::GracefulRestart {
            flags: restart_state,
            restart_time: u16::try_from(restart_time.as_secs())
                .unwrap_or(MAX_RESTART_TIME)
                .min(MAX_RESTART_TIME),
            families: self
                .config
                .families
                .iter()
                .map(|f| {
                    let (afi, safi) = f.afi_safi();
                    GracefulRestartFamily {
                        afi,
                        safi,
                        flags: FORWARDING_STATE,
                    }
                })
                .collect(),
        }
    }

    /// Judges the peer's OPEN (RFC 4271 §6.2, RFC 5492, RFC 6793) and settles the session.
    pub(super) fn check_open(&self, open: &Open) -> Result<Negotiated, (Notification, String)> {
        let peer_as = open.peer_as();
        if !self.config.peer_as.accepts(self.config.local_asn, peer_as) {
            return Err((
                Notification::new(code::OPEN, code::BAD_PEER_AS),
                format!("peer is AS {peer_as}, configured {}", self.config.peer_as),
            ));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            let data = open.hold_time.to_be_bytes();
            return Err((
                Notification::with_data(code::OPEN, code::UNACCEPTABLE_HOLD_TIME, &data),
                format!(
                    "hold time {} s is neither 0 nor at least 3 s",
                    open.hold_time
                ),
            ));
        }
        let id = open.bgp_id;
        if id.is_unspecified() || (self.config.is_ibgp() && id == self.config.router_id) {
            return Err((
                Notification::with_data(code::OPEN, code::BAD_BGP_IDENTIFIER, &id.octets()),
                format!("BGP identifier {id} is zero or ours"),
            ));
        }
        if let Some(kind) = open.unsupported_params.first() {
            return Err((
                Notification::new(code::OPEN, code::UNSUPPORTED_OPTIONAL_PARAMETER),
                format!("optional parameter of type {kind}"),
            ));
        }
        if u16::try_from(self.config.local_asn).is_err() && !open.has_four_octet_as() {
            // The capability we require, as it appears in an OPEN (RFC 5492 §5).
            let mut data = vec![65, 4];
            data.extend_from_slice(&self.config.local_asn.to_be_bytes());
            return Err((
                Notification::with_data(code::OPEN, code::UNSUPPORTED_CAPABILITY, &data),
                format!(
                    "our AS {} needs 4 octets and the peer lacks the 4-octet AS capability",
                    self.config.local_asn
                ),
            ));
        }
        let hold_secs = open.hold_time.min(self.config.hold_time_secs());
        let hold_time = Duration::from_secs(u64::from(hold_secs));
        let keepalive = if hold_secs == 0 {
            Duration::ZERO
        } else {
            let third = hold_time / 3;
            self.config
                .keepalive
                .map_or(third, |k| k.min(third))
                .max(Duration::from_secs(1))
        };
        let offered: BTreeSet<Family> = open.families().into_iter().collect();
        Ok(Negotiated {
            hold_time,
            keepalive,
            families: self
                .config
                .families
                .intersection(&offered)
                .copied()
                .collect(),
            four_octet: open.has_four_octet_as(),
            route_refresh: open.has_route_refresh(),
            peer_as,
            peer_id: id,
            peer_graceful_restart: open
                .capabilities
                .iter()
                .find(|c| matches!(c, Capability::GracefulRestart { .. }))
                .cloned(),
            graceful_restart: self.config.graceful_restart.is_some()
                && open
                    .capabilities
                    .iter()
                    .any(|c| matches!(c, Capability::GracefulRestart { .. })),
        })
    }

    pub(super) fn open_confirm(
        &mut self,
        now: Instant,
        id: ConnId,
        negotiated: Negotiated,
        out: &mut Vec<Action>,
    ) {
        // Collision (§6.8): another connection to the same peer already past its OPEN.
        let other = self
            .conns
            .iter()
            .find(|c| c.id != id && c.state >= ConnState::OpenConfirm)
            .map(|c| (c.id, c.state, c.direction));
        if let Some((other_id, other_state, _)) = other {
            let this_dir = self.conn(id).map(|c| c.direction);
            let keep_ours = u32::from(self.config.router_id) > u32::from(negotiated.peer_id);
            let loser = if other_state == ConnState::Established {
                id
            } else if (this_dir == Some(Direction::Outbound)) == keep_ours {
                other_id
            } else {
                id
            };
            let n = Notification::new(code::CEASE, code::CONNECTION_COLLISION);
            let detail = "connection collision resolved".to_string();
            self.fail(now, loser, n, detail, out);
            if loser == id {
                return;
            }
        }
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.state = ConnState::OpenConfirm;
        conn.hold_deadline = (!negotiated.hold_time.is_zero()).then(|| now + negotiated.hold_time);
        conn.keepalive_deadline =
            (!negotiated.keepalive.is_zero()).then(|| now + negotiated.keepalive);
        conn.negotiated = Some(negotiated);
        out.push(Action::Send(id, wire::encode_keepalive()));
    }
}
