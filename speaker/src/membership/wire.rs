//! The membership wire format: one UDP datagram per message, version 1, big-endian, signed with
//! HMAC-SHA256 over every byte before the tag.
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     1  kind (1 Ping, 2 Heartbeat, 3 Alive, 4 Dead, 5 Suspect, 6 Leave, 7 Sync)
//!      2     8  sender incarnation (unix ms of the sender's start, bumped by refutations)
//!     10     8  sequence (per sender, strictly increasing)
//!     18     8  timestamp (sender's unix ms when it sent this)
//!     26     4  digest of the sender's dead set (anti-entropy)
//!     30   1+n  sender node name (length byte, UTF-8)
//!      …        body: Alive: 1 flag byte (1 = please answer with your own Alive)
//!                     Dead, Suspect: 1+m subject name, 8 subject incarnation
//!                     Sync: 1 flag byte, 2 count, then count × (1+m name, 1 state, 8 incarnation)
//!                     Ping, Heartbeat, Leave: nothing
//!   end-32    32  HMAC-SHA256 tag
//! ```
//!
//! A Ping or Heartbeat from a node with a 20-byte name is 30 + 21 + 32 = 83 bytes; a Dead notice
//! about a node with a 20-byte name adds 29 bytes (112). Sync messages stay under [`MAX_DATAGRAM`].

use ring::hmac;

/// Version of this format.
pub const VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Fixed header before the sender name.
const HEADER_LEN: usize = 30;
/// The largest datagram we build (fits a 1280-byte IPv6 minimum MTU with IP and UDP headers).
pub const MAX_DATAGRAM: usize = 1200;

/// What a peer says about a member in a [`Body::Sync`] entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rumor {
    /// The member is alive at this incarnation.
    Alive,
    /// The member was declared dead at this incarnation.
    Dead,
}

/// One entry of a [`Body::Sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEntry {
    /// Node name.
    pub node: String,
    /// What the sender believes.
    pub rumor: Rumor,
    /// At which incarnation.
    pub incarnation: u64,
}

/// The kind-specific part of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A monitor asks its predecessor for heartbeats (and gets one back at once).
    Ping,
    /// "I am alive": the answer to a Ping, and sent every interval to recent pingers.
    Heartbeat,
    /// "I am alive at this incarnation", sent to everyone on start and on refutation.
    Alive {
        /// The receiver should answer with its own Alive (so a starting node learns the view).
        reply: bool,
    },
    /// `node` was declared dead at `incarnation`.
    Dead {
        /// The dead member.
        node: String,
        /// Its incarnation when it died.
        incarnation: u64,
    },
    /// The sender, a monitor of `node`, has not heard it for the timeout.
    Suspect {
        /// The suspected member.
        node: String,
        /// Its incarnation as the sender knows it.
        incarnation: u64,
    },
    /// The sender is shutting down: drop it now.
    Leave,
    /// Anti-entropy: the sender's dead set (or corrections to the receiver's).
    Sync {
        /// The receiver should answer with corrections where it knows better.
        reply: bool,
        /// The entries.
        entries: Vec<SyncEntry>,
    },
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Ping => 1,
            Body::Heartbeat => 2,
            Body::Alive { .. } => 3,
            Body::Dead { .. } => 4,
            Body::Suspect { .. } => 5,
            Body::Leave => 6,
            Body::Sync { .. } => 7,
        }
    }
}

/// A decoded (and authenticated) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sending node's name.
    pub sender: String,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's sequence number.
    pub sequence: u64,
    /// The sender's clock, unix milliseconds.
    pub timestamp_ms: u64,
    /// Digest of the sender's dead set.
    pub digest: u32,
    /// What it says.
    pub body: Body,
}

/// Why a datagram was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The tag does not match under any accepted key (forged, corrupted, or another key).
    #[error("HMAC tag does not verify")]
    BadMac,
    /// Shorter than a header plus tag, or a field runs past the end.
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// A version this speaker does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// A field holds a value it may not (empty or non-UTF-8 name, unknown state).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes left over after the body.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// The message does not fit into [`MAX_DATAGRAM`] (node name too long, too many entries).
    #[error("message of {0} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
}

/// Bytes an encoded Sync entry for `node` takes.
pub fn sync_entry_len(node: &str) -> usize {
    1 + node.len() + 1 + 8
}

/// Bytes a message from `sender` with an empty Sync body takes (to size Sync chunks).
pub fn sync_overhead(sender: &str) -> usize {
    HEADER_LEN + 1 + sender.len() + 1 + 2 + TAG_LEN
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), WireError> {
    let len = u8::try_from(name.len())
        .map_err(|_| WireError::Invalid("node name longer than 255 bytes"))?;
    if len == 0 {
        return Err(WireError::Invalid("empty node name"));
    }
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// Encodes and signs `msg` with `key`.
pub fn encode(msg: &Message, key: &hmac::Key) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    out.push(msg.body.kind());
    out.extend_from_slice(&msg.incarnation.to_be_bytes());
    out.extend_from_slice(&msg.sequence.to_be_bytes());
    out.extend_from_slice(&msg.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&msg.digest.to_be_bytes());
    put_name(&mut out, &msg.sender)?;
    match &msg.body {
        Body::Ping | Body::Heartbeat | Body::Leave => {}
        Body::Alive { reply } => out.push(u8::from(*reply)),
        Body::Dead { node, incarnation } | Body::Suspect { node, incarnation } => {
            put_name(&mut out, node)?;
            out.extend_from_slice(&incarnation.to_be_bytes());
        }
        Body::Sync { reply, entries } => {
            out.push(u8::from(*reply));
            let count =
                u16::try_from(entries.len()).map_err(|_| WireError::TooLarge(usize::MAX))?;
            out.extend_from_slice(&count.to_be_bytes());
            for entry in entries {
                put_name(&mut out, &entry.node)?;
                out.push(match entry.rumor {
                    Rumor::Alive => 1,
                    Rumor::Dead => 2,
                });
                out.extend_from_slice(&entry.incarnation.to_be_bytes());
            }
        }
    }
    let tag = hmac::sign(key, &out);
    out.extend_from_slice(tag.as_ref());
    if out.len() > MAX_DATAGRAM {
        return Err(WireError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Verifies the tag of `bytes` under any of `keys` (constant-time) and decodes the message.
pub fn decode<'k>(
    bytes: &[u8],
    keys: impl IntoIterator<Item = &'k hmac::Key>,
) -> Result<Message, WireError> {
    if bytes.len() < HEADER_LEN + 2 + TAG_LEN {
        return Err(WireError::Truncated(bytes.len()));
    }
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    if !keys
        .into_iter()
        .any(|key| hmac::verify(key, signed, tag).is_ok())
    {
        return Err(WireError::BadMac);
    }
    let mut r = Reader {
        bytes: signed,
        pos: 0,
    };
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = r.u8()?;
    let incarnation = r.u64()?;
    let sequence = r.u64()?;
    let timestamp_ms = r.u64()?;
    let digest = r.u32()?;
    let sender = r.name()?;
    let body = match kind {
        1 => Body::Ping,
        2 => Body::Heartbeat,
        3 => Body::Alive { reply: r.flag()? },
        4 => Body::Dead {
            node: r.name()?,
            incarnation: r.u64()?,
        },
        5 => Body::Suspect {
            node: r.name()?,
            incarnation: r.u64()?,
        },
        6 => Body::Leave,
        7 => {
            let reply = r.flag()?;
            let count = r.u16()?;
            let mut entries = Vec::with_capacity(usize::from(count).min(128));
            for _ in 0..count {
                let node = r.name()?;
                let rumor = match r.u8()? {
                    1 => Rumor::Alive,
                    2 => Rumor::Dead,
                    _ => return Err(WireError::Invalid("sync entry state")),
                };
                entries.push(SyncEntry {
                    node,
                    rumor,
                    incarnation: r.u64()?,
                });
            }
            Body::Sync { reply, entries }
        }
        other => return Err(WireError::Kind(other)),
    };
    if r.pos != signed.len() {
        return Err(WireError::Trailing(signed.len() - r.pos));
    }
    Ok(Message {
        sender,
        incarnation,
        sequence,
        timestamp_ms,
        digest,
        body,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let end = self.pos + N;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(WireError::Truncated(self.pos))?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid("flag byte")),
        }
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn name(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        if len == 0 {
            return Err(WireError::Invalid("empty node name"));
        }
        let end = self.pos + len;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(WireError::Truncated(self.pos))?;
        self.pos = end;
        String::from_utf8(slice.to_vec()).map_err(|_| WireError::Invalid("node name is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(bytes: &[u8]) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, bytes)
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9.-]{0,40}"
    }

    fn body() -> impl Strategy<Value = Body> {
        let entry =
            (name(), any::<bool>(), any::<u64>()).prop_map(|(node, dead, incarnation)| SyncEntry {
                node,
                rumor: if dead { Rumor::Dead } else { Rumor::Alive },
                incarnation,
            });
        prop_oneof![
            Just(Body::Ping),
            Just(Body::Heartbeat),
            Just(Body::Leave),
            any::<bool>().prop_map(|reply| Body::Alive { reply }),
            (name(), any::<u64>()).prop_map(|(node, incarnation)| Body::Dead { node, incarnation }),
            (name(), any::<u64>())
                .prop_map(|(node, incarnation)| Body::Suspect { node, incarnation }),
            (any::<bool>(), proptest::collection::vec(entry, 0..10))
                .prop_map(|(reply, entries)| Body::Sync { reply, entries }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            name(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            body(),
        )
            .prop_map(
                |(sender, incarnation, sequence, timestamp_ms, digest, body)| Message {
                    sender,
                    incarnation,
                    sequence,
                    timestamp_ms,
                    digest,
                    body,
                },
            )
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in message()) {
            let k = key(b"secret");
            let bytes = encode(&msg, &k).unwrap();
            prop_assert_eq!(decode(&bytes, [&k]).unwrap(), msg);
        }

        #[test]
        fn any_bit_flip_is_rejected(msg in message(), bit in any::<prop::sample::Index>()) {
            let k = key(b"secret");
            let mut bytes = encode(&msg, &k).unwrap();
            let i = bit.index(bytes.len() * 8);
            bytes[i / 8] ^= 1 << (i % 8);
            prop_assert!(decode(&bytes, [&k]).is_err());
        }

        #[test]
        fn any_truncation_is_rejected(msg in message(), cut in any::<prop::sample::Index>()) {
            let k = key(b"secret");
            let bytes = encode(&msg, &k).unwrap();
            let len = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..len], [&k]).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, [&key(b"secret")]);
        }
    }

    #[test]
    fn another_key_is_a_bad_mac() {
        let msg = Message {
            sender: "node-a".into(),
            incarnation: 1,
            sequence: 2,
            timestamp_ms: 3,
            digest: 4,
            body: Body::Ping,
        };
        let bytes = encode(&msg, &key(b"one")).unwrap();
        assert_eq!(decode(&bytes, [&key(b"two")]), Err(WireError::BadMac));
        assert_eq!(decode(&bytes, [&key(b"two"), &key(b"one")]), Ok(msg));
    }

    #[test]
    fn heartbeat_is_83_bytes_for_a_20_byte_name() {
        let msg = Message {
            sender: "worker-0123456789abc".into(),
            incarnation: 1,
            sequence: 2,
            timestamp_ms: 3,
            digest: 4,
            body: Body::Heartbeat,
        };
        assert_eq!(msg.sender.len(), 20);
        assert_eq!(encode(&msg, &key(b"k")).unwrap().len(), 83);
    }
}
