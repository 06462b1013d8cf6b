//! The wire protocol: versioned, length-delimited frames with a maximum size.
//!
//! ```text
//! frame   = length:u32be  payload            (length = payload size, at most the configured max)
//! payload = version:u8    body:postcard(Frame)
//! ```
//!
//! The body's schema is the [`Frame`] type below, encoded with postcard (a compact,
//! documented serde format; enum variants are tagged by index, so variants are only ever added
//! at the end). A frame with another version, a body that does not decode, or trailing bytes is
//! refused with a typed [`WireError`]; since the length prefix was read, the stream stays in
//! sync and the next frame is read normally. An oversized length is refused without reading
//! the payload, and the stream is then closed (it cannot be resynchronised cheaply).

use alloy::primitives::{Address, Signature};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Version byte of every frame this code writes and the only one it reads.
pub const WIRE_VERSION: u8 = 1;

/// Default maximum payload size: 1 MiB (a full update of 1,024 operations is about 150 KiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// One frame on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame each way: who the sender is, and its signature over the connection's auth
    /// digest (see [`crate::auth`]).
    Auth {
        /// The sender's Ethereum address.
        address: Address,
        /// Its signature over the auth digest of this connection and role.
        sig: Signature,
    },
    /// A reliable message: numbered per session direction, delivered once, in order.
    Msg {
        /// Sequence number, from 1, increasing by one.
        seq: u64,
        /// The message.
        body: Body,
    },
    /// Everything up to and including `seq` was received and persisted.
    Ack {
        /// Highest sequence number processed.
        seq: u64,
    },
    /// The previous frame was refused; nothing changed.
    Error {
        /// What was wrong.
        code: ErrorCode,
        /// Human-readable detail, for logs.
        detail: String,
    },
    /// Gossip about announced channels: unnumbered, best effort (added at the end: variants
    /// are tagged by index).
    Gossip(Box<htlc::node::gossip::GossipMsg>),
}

pub use htlc::node::{Body, ErrorCode};

impl From<htlc::node::Frame> for Frame {
    fn from(f: htlc::node::Frame) -> Frame {
        match f {
            htlc::node::Frame::Msg { seq, body } => Frame::Msg { seq, body },
            htlc::node::Frame::Ack { seq } => Frame::Ack { seq },
            htlc::node::Frame::Error { code, detail } => Frame::Error { code, detail },
            htlc::node::Frame::Gossip(msg) => Frame::Gossip(msg),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The announced length exceeds the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// Empty payload or unknown version byte.
    #[error("unsupported frame version {0:?}")]
    UnsupportedVersion(Option<u8>),
    /// The body does not decode as a [`Frame`], or has trailing bytes.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream failed or ended mid-frame.
    #[error("stream error: {0}")]
    Io(String),
}

impl WireError {
    /// The code to send back for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::TooLarge { .. } => ErrorCode::TooLarge,
            WireError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            WireError::Malformed(_) | WireError::Io(_) => ErrorCode::Malformed,
        }
    }

    /// Whether the stream is still in sync after this error (the next frame can be read).
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            WireError::UnsupportedVersion(_) | WireError::Malformed(_)
        )
    }
}

/// Encode a frame with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 5];
    out[4] = WIRE_VERSION;
    let out = postcard::to_extend(frame, out).map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = u32::try_from(out.len() - 4).map_err(|_| WireError::TooLarge {
        len: out.len() - 4,
        max: u32::MAX as usize,
    })?;
    let mut out = out;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decode a payload (version byte and body, without the length prefix).
pub fn decode_payload(payload: &[u8]) -> Result<Frame, WireError> {
    match payload.split_first() {
        Some((&WIRE_VERSION, body)) => {
            let (frame, rest) = postcard::take_from_bytes::<Frame>(body)
                .map_err(|e| WireError::Malformed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(WireError::Malformed(format!(
                    "{} trailing bytes",
                    rest.len()
                )));
            }
            Ok(frame)
        }
        Some((&v, _)) => Err(WireError::UnsupportedVersion(Some(v))),
        None => Err(WireError::UnsupportedVersion(None)),
    }
}

/// Check a length prefix against the maximum.
pub fn check_len(prefix: [u8; 4], max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decode one complete frame (length prefix included) from a buffer; for tests and fuzzing.
pub fn decode(buf: &[u8], max: usize) -> Result<Frame, WireError> {
    let Some((prefix, payload)) = buf.split_first_chunk::<4>() else {
        return Err(WireError::Io("truncated length prefix".into()));
    };
    let len = check_len(*prefix, max)?;
    if payload.len() != len {
        return Err(WireError::Io(format!(
            "length prefix says {len}, {} bytes follow",
            payload.len()
        )));
    }
    decode_payload(payload)
}

/// Read one frame from a stream (a QUIC stream, or a buffered reader around one: a session
/// reads through a buffer, so that the frames that arrived together cost one read of the
/// connection, not two per frame). `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    recv: &mut R,
    max: usize,
) -> Result<Option<Frame>, WireError> {
    let io = |e: std::io::Error| WireError::Io(e.to_string());
    let mut prefix = [0u8; 4];
    // Zero bytes before a frame starts is the clean end; an end inside a frame is not.
    let first = recv.read(&mut prefix).await.map_err(io)?;
    if first == 0 {
        return Ok(None);
    }
    if let Some(rest) = prefix.get_mut(first..) {
        recv.read_exact(rest).await.map_err(io)?;
    }
    let len = check_len(prefix, max)?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.map_err(io)?;
    decode_payload(&payload).map(Some)
}

/// Write one frame to a QUIC stream.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), WireError> {
    let bytes = encode(frame)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| WireError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let f = Frame::Msg {
            seq: 7,
            body: Body::Ping,
        };
        let bytes = encode(&f).unwrap();
        assert_eq!(decode(&bytes, DEFAULT_MAX_FRAME).unwrap(), f);
    }

    #[test]
    fn typed_errors() {
        let mut bytes = encode(&Frame::Ack { seq: 1 }).unwrap();
        assert!(matches!(decode(&bytes, 1), Err(WireError::TooLarge { .. })));
        bytes[4] = 9;
        assert!(matches!(
            decode(&bytes, DEFAULT_MAX_FRAME),
            Err(WireError::UnsupportedVersion(Some(9)))
        ));
        let junk = [0, 0, 0, 3, WIRE_VERSION, 0xff, 0xff];
        assert!(matches!(
            decode(&junk, DEFAULT_MAX_FRAME),
            Err(WireError::Malformed(_))
        ));
        let mut trailing = encode(&Frame::Ack { seq: 1 }).unwrap();
        trailing.push(0);
        trailing[3] += 1;
        assert!(matches!(
            decode(&trailing, DEFAULT_MAX_FRAME),
            Err(WireError::Malformed(_))
        ));
    }

    proptest! {
        #![proptest_config(testkit::config(256))]

        /// The decoder never panics, whatever the bytes.
        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, DEFAULT_MAX_FRAME);
            let _ = decode_payload(&bytes);
        }
    }
}
