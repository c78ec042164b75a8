//! What the shell exposes as metrics and logs: counts, and why the session last failed.

use std::collections::BTreeMap;
use std::fmt;

use super::wire::Notification;

/// Why a session (or one connection of it) ended. Stable enough to be a metric label through
/// [`SessionError::label`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// We sent this NOTIFICATION; `detail` says what we saw.
    NotificationSent {
        notification: Notification,
        detail: String,
    },
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The TCP connection closed or failed under us.
    ConnectionClosed,
    /// The dial failed (reported by the shell) or timed out (the connect-retry timer).
    ConnectFailed,
    /// BFD declared the path down (the next issue wires BFD; the session already obeys).
    BfdDown,
    /// Stopped by the operator (configuration removed, or reset).
    Stopped { reset: bool },
}

impl SessionError {
    /// A short fixed label per kind, for a metric.
    pub fn label(&self) -> &'static str {
        match self {
            SessionError::NotificationSent { .. } => "notification_sent",
            SessionError::NotificationReceived(_) => "notification_received",
            SessionError::ConnectionClosed => "connection_closed",
            SessionError::ConnectFailed => "connect_failed",
            SessionError::BfdDown => "bfd_down",
            SessionError::Stopped { .. } => "stopped",
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::NotificationSent {
                notification,
                detail,
            } => write!(f, "sent {notification}: {detail}"),
            SessionError::NotificationReceived(n) => {
                write!(f, "peer sent {n}")?;
                if !n.data.is_empty() {
                    write!(f, " with {} octets of data", n.data.len())?;
                }
                Ok(())
            }
            SessionError::ConnectionClosed => f.write_str("connection closed"),
            SessionError::ConnectFailed => f.write_str("connection attempt failed"),
            SessionError::BfdDown => f.write_str("BFD reported the peer down"),
            SessionError::Stopped { reset: false } => f.write_str("administratively shut down"),
            SessionError::Stopped { reset: true } => f.write_str("administratively reset"),
        }
    }
}

impl std::error::Error for SessionError {}

/// Counters of one session, over its whole life (across reconnects).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub updates_sent: u64,
    pub updates_received: u64,
    /// Prefixes the peer announced to us (counted, never kept).
    pub prefixes_received: u64,
    /// Prefixes the peer withdrew.
    pub withdrawals_received: u64,
    /// NOTIFICATIONs by (code, subcode).
    pub notifications_sent: BTreeMap<(u8, u8), u64>,
    pub notifications_received: BTreeMap<(u8, u8), u64>,
    /// How often the session reached Established.
    pub established: u64,
    /// Desired prefixes the current session cannot carry (family not negotiated, or no next
    /// hop for it), as of the last sync.
    pub prefixes_skipped: usize,
    /// Prefixes whose attributes alone fill a message, so they cannot be sent.
    pub prefixes_oversized: usize,
    pub last_error: Option<SessionError>,
}
