//! Received bytes: framing into messages, and what each message does in each state.

use std::time::{Duration, Instant};

use super::{Action, ConnId, ConnState, Session, SessionError};
use crate::bgp::wire::{self, Family, Message, Notification, code};

impl Session {
    /// Bytes read from connection `id`, in any chunking.
    pub fn receive(&mut self, now: Instant, id: ConnId, bytes: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        let mut input = bytes;
        while let Some(next) = self.next_message(id, &mut input) {
            match next {
                Ok(message) => self.handle(now, id, message, &mut out),
                Err(n) => {
                    self.fail(now, id, n, "malformed message".into(), &mut out);
                    break;
                }
            }
        }
        out
    }

    /// The next whole message of `id` from its buffer and `input`, or `None` once more bytes are
    /// needed (the rest is buffered: less than one message).
    fn next_message(
        &mut self,
        id: ConnId,
        input: &mut &[u8],
    ) -> Option<Result<Message, Notification>> {
        let conn = self
            .conns
            .iter_mut()
            .find(|c| c.id == id && c.state != ConnState::Connecting)?;
        if conn.buf.is_empty() {
            return match wire::frame_length(input) {
                Err(n) => Some(Err(n)),
                Ok(None) => {
                    conn.buf.extend_from_slice(input);
                    *input = &[];
                    None
                }
                Ok(Some(len)) => {
                    let (message, rest) = input.split_at(len.min(input.len()));
                    *input = rest;
                    Some(wire::decode(message))
                }
            };
        }
        // Top up the header, learn the length, then top up the body.
        let missing = wire::HEADER_LEN.saturating_sub(conn.buf.len());
        let (head, rest) = input.split_at(missing.min(input.len()));
        conn.buf.extend_from_slice(head);
        *input = rest;
        if let Err(n) = wire::frame_length(&conn.buf) {
            return Some(Err(n));
        }
        let declared = conn
            .buf
            .get(16..18)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)?;
        let missing = usize::from(declared).saturating_sub(conn.buf.len());
        let (body, rest) = input.split_at(missing.min(input.len()));
        conn.buf.extend_from_slice(body);
        *input = rest;
        if conn.buf.len() < usize::from(declared) {
            return None;
        }
        let message = std::mem::take(&mut conn.buf);
        Some(wire::decode(&message))
    }

    fn handle(&mut self, now: Instant, id: ConnId, message: Message, out: &mut Vec<Action>) {
        let Some(state) = self.conn(id).map(|c| c.state) else {
            return;
        };
        if let Message::Notification(n) = message {
            *self
                .counters
                .notifications_received
                .entry((n.code, n.subcode))
                .or_default() += 1;
            self.drop_conn(now, id, None, SessionError::NotificationReceived(n), out);
            return;
        }
        match (state, message) {
            (ConnState::OpenSent, Message::Open(open)) => match self.check_open(&open) {
                Ok(negotiated) => self.open_confirm(now, id, negotiated, out),
                Err((n, detail)) => self.fail(now, id, n, detail, out),
            },
            (ConnState::OpenConfirm, Message::Keepalive) => self.establish(now, id, out),
            (ConnState::Established, Message::Keepalive) => self.heard(now, id),
            (ConnState::Established, Message::Update(summary)) => {
                self.heard(now, id);
                self.counters.updates_received += 1;
                self.counters.prefixes_received += summary.announced as u64;
                self.counters.withdrawals_received += summary.withdrawn as u64;
            }
            (ConnState::Established, Message::RouteRefresh { afi, safi }) => {
                self.heard(now, id);
                let family = Family::from_afi_safi(afi, safi);
                let negotiated = self.negotiated().map(|n| &n.families);
                // A family we did not negotiate is ignored (RFC 2918 §4).
                if let Some(family) = family.filter(|f| negotiated.is_some_and(|n| n.contains(f))) {
                    self.rib.forget(family);
                    self.sync(now, out);
                }
            }
            (state, message) => {
                let subcode = match state {
                    ConnState::OpenSent => code::UNEXPECTED_IN_OPEN_SENT,
                    ConnState::OpenConfirm => code::UNEXPECTED_IN_OPEN_CONFIRM,
                    _ => code::UNEXPECTED_IN_ESTABLISHED,
                };
                let detail = format!("unexpected {} in {state:?}", kind_name(&message));
                self.fail(now, id, Notification::new(code::FSM, subcode), detail, out);
            }
        }
    }

    /// A valid message restarts the hold timer.
    pub(super) fn heard(&mut self, now: Instant, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            let hold = conn
                .negotiated
                .as_ref()
                .map_or(Duration::ZERO, |n| n.hold_time);
            conn.hold_deadline = (!hold.is_zero()).then(|| now + hold);
        }
    }
}

fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::Open(_) => "OPEN",
        Message::Update(_) => "UPDATE",
        Message::Notification(_) => "NOTIFICATION",
        Message::Keepalive => "KEEPALIVE",
        Message::RouteRefresh { .. } => "ROUTE-REFRESH",
    }
}
