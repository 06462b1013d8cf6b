//! Onion-wrapped route instructions: each hop of a payment learns its own instruction and the
//! next hop, nothing else (ADR 0027).
//!
//! The payer builds one fixed-size [`Packet`] for a route of up to [`MAX_HOPS`] nodes. Each
//! node [`peel`]s one layer with its secp256k1 key and finds its [`HopPayload`] (forward
//! `amount` to `next` with `expiry`, or: you are the payee) and, unless it is the last, the
//! packet to hand to the next node. The packet has the same size at every hop, so a node cannot
//! tell how far it is from either end, and a changed bit anywhere fails the next node's MAC.
//!
//! The construction is the Sphinx mix format as the Lightning Network uses it, written here for
//! our payload: per hop a shared secret `ss = sha256(ECDH(ephemeral, node))`, a ChaCha20 stream
//! keyed by `HMAC(ss, "rho")` over the routing information, a MAC keyed by `HMAC(ss, "mu")`.
//! One change (format version 1): instead of each node blinding the ephemeral key for the
//! next (a second constant-time scalar multiplication per hop, 40 µs), the payer picks every
//! hop's ephemeral key itself (derived from its session key and the hop's index) and writes the
//! next hop's public one into the last 33 bytes of each forwarding layer, encrypted with the
//! rest; a node peels with one ECDH. The next node still sees a key unrelated to the one before
//! it. The primitives come from well-kept crates (`secp256k1`, `chacha20`, `hmac`, `sha2`);
//! this module only arranges them.
//!
//! Failures travel back the same way ([`ErrorPacket`]): the failing node MACs and encrypts its
//! [`FailureReason`] with its shared secret, each node on the way back adds a layer, and the
//! payer, who knows every shared secret, finds which node's MAC holds: the failing hop, which
//! no node in between can forge or hide (it can only garble the packet, and then the payer
//! knows the garbling happened at or before the first hop it cannot decode).
//!
//! A payment through a single hub (or none), paid whole, carries a [`Packet::Plain`] instead
//! (ADR 0029): each hop's instruction in the clear with a per-hop secret for its failure
//! packet, because there it hides nothing (the hub knows the payer and the payee either way)
//! and the Sphinx layers cost the three nodes about 240 µs. The payee's checks of its invoice
//! bound what a hub can do with it; failure attribution between the hub and the payee then
//! rests on the hub's word.
//!
//! The payer's session key is derived from its own key and the payment id ([`session_key`]),
//! so the node machine stays deterministic (no randomness is an input); the payer keeps each
//! payment's secrets with its record to read a failure.

use crate::amount::Amount;
use crate::failure::FailureReason;
use crate::ids::Expiry;
use alloy::primitives::{Address, B256};
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use secp256k1::ecdh::SharedSecret;
use secp256k1::{PublicKey, SECP256K1, SecretKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Most nodes a route may have after the payer (hubs and the payee).
pub const MAX_HOPS: usize = 10;
/// Bytes of one hop's instruction (its encoding, length-prefixed and zero-padded).
pub const PAYLOAD_LEN: usize = 96;
const MAC_LEN: usize = 32;
const FRAME_LEN: usize = PAYLOAD_LEN + MAC_LEN;
/// Bytes of the routing information: one frame per possible hop.
pub const ROUTING_LEN: usize = MAX_HOPS * FRAME_LEN;
/// Bytes of a failure's message inside an [`ErrorPacket`].
const FAILURE_LEN: usize = 64;
/// Bytes of an [`ErrorPacket`].
pub const ERROR_LEN: usize = MAC_LEN + FAILURE_LEN;
/// Where in a layer's payload the next hop's ephemeral key starts (compressed, 33 bytes).
const NEXT_KEY_AT: usize = PAYLOAD_LEN - 33;
const VERSION: u8 = 1;

type HmacSha256 = Hmac<Sha256>;

/// One node's instruction, as the payer wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HopPayload {
    /// Offer an HTLC of `amount` expiring at `expiry` to `next`, with the same hashlock.
    Forward {
        /// The next node.
        next: Address,
        /// Amount of the outgoing HTLC.
        amount: Amount,
        /// Expiry of the outgoing HTLC.
        expiry: Expiry,
    },
    /// You are the payee: the HTLC should carry `amount` and expire at `expiry` (what the payer
    /// sent, so a node before the payee that took more than its fee is caught), out of a payment
    /// of `total` (several parts of one payment name the same total).
    Final {
        /// Amount this HTLC carries.
        amount: Amount,
        /// Expiry of this HTLC.
        expiry: Expiry,
        /// The whole payment's amount.
        total: Amount,
    },
}

/// One hop of a route, as the payer sees it: the node's key and its instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The node's public key (its address is derived from it).
    pub node: PublicKey,
    /// What it is to do.
    pub payload: HopPayload,
}

/// The route instruction handed with an HTLC.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Packet {
    /// Onion layers: each node reads only its own ([`build`]).
    Sphinx(Sphinx),
    /// Each hop's instruction in the clear, with the secret of its failure packet, first hop
    /// first ([`plain`]): for routes through at most one hub, paid whole (ADR 0029).
    Plain(Vec<PlainHop>),
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Packet::Sphinx(s) => write!(f, "Packet(mac {})", s.mac),
            Packet::Plain(hops) => write!(f, "Packet(plain, {} hops)", hops.len()),
        }
    }
}

impl Packet {
    /// The onion layers, if this is an onion.
    pub fn as_sphinx(&self) -> Option<&Sphinx> {
        match self {
            Packet::Sphinx(s) => Some(s),
            Packet::Plain(_) => None,
        }
    }

    /// As [`Packet::as_sphinx`], to change (tests that garble a packet).
    pub fn as_sphinx_mut(&mut self) -> Option<&mut Sphinx> {
        match self {
            Packet::Sphinx(s) => Some(s),
            Packet::Plain(_) => None,
        }
    }
}

/// One hop of a [`Packet::Plain`] route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainHop {
    /// Its instruction.
    pub payload: HopPayload,
    /// The key of its failure packet ([`fail`]), derived by the payer from its session key.
    pub secret: B256,
}

/// The onion layers handed with an HTLC: fixed size whatever the route's length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sphinx {
    /// Format version (1: the payer chooses every hop's ephemeral key).
    pub version: u8,
    /// The ephemeral public key for this hop (33 bytes, compressed).
    pub ephemeral: Vec<u8>,
    /// The encrypted routing information ([`ROUTING_LEN`] bytes).
    pub routing: Vec<u8>,
    /// This hop's MAC over the routing information and the hashlock.
    pub mac: B256,
}

impl std::fmt::Debug for Sphinx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sphinx(mac {})", self.mac)
    }
}

/// An encrypted failure on its way back to the payer ([`ERROR_LEN`] bytes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPacket(pub Vec<u8>);

impl std::fmt::Debug for ErrorPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ErrorPacket({} bytes)", self.0.len())
    }
}

/// What one node learns from peeling its layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peeled {
    /// Its instruction.
    pub payload: HopPayload,
    /// The packet for the next node (`None` for the payee).
    pub next: Option<Packet>,
    /// The secret shared with the payer: the key for a failure sent back.
    pub secret: B256,
}

/// Why an onion could not be built or peeled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OnionError {
    /// The route has no hop or more than [`MAX_HOPS`].
    #[error("a route has 1 to {MAX_HOPS} hops, this one {0}")]
    RouteLength(usize),
    /// A payload does not fit in [`PAYLOAD_LEN`] bytes.
    #[error("a hop's instruction does not fit in {PAYLOAD_LEN} bytes")]
    PayloadTooLong,
    /// Wrong version, key or lengths.
    #[error("malformed onion packet")]
    Malformed,
    /// The MAC does not hold: the packet was changed, bound to another hashlock, or is not for
    /// this node.
    #[error("onion MAC mismatch")]
    BadMac,
    /// The MAC holds but the instruction does not decode (the payer wrote garbage).
    #[error("undecodable hop instruction")]
    BadPayload,
    /// A key operation failed (a derived key out of range: negligible probability).
    #[error("onion key derivation failed")]
    Key,
}

/// The payer's session key for payment `id`: derived from its own secret so that the machine
/// needs no randomness and can recompute a payment's shared secrets after a restart.
pub fn session_key(own: &[u8; 32], id: B256) -> Result<SecretKey, OnionError> {
    let k = hmac(
        own,
        &[b"vhub onion session".as_slice(), id.as_slice()].concat(),
    );
    SecretKey::from_byte_array(k.0).map_err(|_| OnionError::Key)
}

/// Build the onion for `hops` (the first is the payer's next node), bound to `hashlock` (the
/// HTLC's: a node refuses a packet handed with another). Returns the packet and each hop's
/// shared secret (to read failures with [`decode_error`]).
pub fn build(
    session: &SecretKey,
    hops: &[Hop],
    hashlock: B256,
) -> Result<(Packet, Vec<B256>), OnionError> {
    let n = hops.len();
    if n == 0 || n > MAX_HOPS {
        return Err(OnionError::RouteLength(n));
    }
    let (ephemerals, secrets) = shared_secrets(session, hops.iter().map(|h| &h.node))?;
    let payloads = hops
        .iter()
        .enumerate()
        .map(|(i, h)| encode_payload(&h.payload, ephemerals.get(i + 1)))
        .collect::<Result<Vec<_>, _>>()?;

    // The bytes the last hop finds at the end of its routing information: what each earlier
    // hop's peel shifted in (zeros) and encrypted.
    let mut filler: Vec<u8> = Vec::with_capacity((n - 1) * FRAME_LEN);
    for (i, ss) in secrets.iter().enumerate().take(n - 1) {
        filler.extend_from_slice(&[0u8; FRAME_LEN]);
        let stream = keystream(&key(ss, b"rho"), ROUTING_LEN + FRAME_LEN);
        let from = ROUTING_LEN - i * FRAME_LEN;
        xor(&mut filler, &stream[from..]);
    }

    // Start from pseudo-random bytes, so the unused frames look like used ones.
    let mut routing = keystream(&hmac(&session.secret_bytes(), b"pad").0, ROUTING_LEN);
    let mut mac = [0u8; MAC_LEN];
    for i in (0..n).rev() {
        routing.copy_within(0..ROUTING_LEN - FRAME_LEN, FRAME_LEN);
        routing[..PAYLOAD_LEN].copy_from_slice(&payloads[i]);
        routing[PAYLOAD_LEN..FRAME_LEN].copy_from_slice(&mac);
        xor(
            &mut routing,
            &keystream(&key(&secrets[i], b"rho"), ROUTING_LEN),
        );
        if i == n - 1 {
            routing[ROUTING_LEN - filler.len()..].copy_from_slice(&filler);
        }
        mac = mac_of(&key(&secrets[i], b"mu"), &[&routing, hashlock.as_slice()])
            .finalize()
            .into_bytes()
            .into();
    }
    let packet = Packet::Sphinx(Sphinx {
        version: VERSION,
        ephemeral: ephemerals[0].serialize().to_vec(),
        routing,
        mac: B256::from(mac),
    });
    Ok((packet, secrets))
}

/// The plain route instruction for `hops` (ADR 0029: through at most one hub, paid whole),
/// with each hop's failure secret derived from `session`. Returns the packet and the secrets
/// (to read failures with [`decode_error`], as for [`build`]).
pub fn plain(session: &SecretKey, hops: &[Hop]) -> Result<(Packet, Vec<B256>), OnionError> {
    let n = hops.len();
    if n == 0 || n > MAX_HOPS {
        return Err(OnionError::RouteLength(n));
    }
    let hops: Vec<PlainHop> = hops
        .iter()
        .enumerate()
        .map(|(i, h)| PlainHop {
            payload: h.payload,
            secret: hmac(
                &session.secret_bytes(),
                &[b"vhub plain hop".as_slice(), &(i as u64).to_be_bytes()].concat(),
            ),
        })
        .collect();
    let secrets = hops.iter().map(|h| h.secret).collect();
    Ok((Packet::Plain(hops), secrets))
}

/// The shared secrets of an onion route the payer built with `session` (as [`build`] returns
/// them), from the hops' keys alone; not those of a [`Packet::Plain`] route.
pub fn route_secrets(session: &SecretKey, nodes: &[PublicKey]) -> Result<Vec<B256>, OnionError> {
    shared_secrets(session, nodes.iter()).map(|(_, s)| s)
}

/// Peel this node's layer off `packet` with its key `own`, checking it is bound to `hashlock`
/// (a plain route's first hop is ours, in the clear).
pub fn peel(packet: &Packet, own: &SecretKey, hashlock: B256) -> Result<Peeled, OnionError> {
    let (payload, next, secret) = match packet {
        Packet::Sphinx(s) => peel_sphinx(s, own, hashlock)?,
        Packet::Plain(hops) => {
            let (first, rest) = match hops.split_first() {
                Some(x) if hops.len() <= MAX_HOPS => x,
                _ => return Err(OnionError::Malformed),
            };
            // Plain routes are for whole payments only (ADR 0029): a part of a multi-path
            // payment keeps its onion, so a hub cannot rewrite what a part says it carries.
            if let HopPayload::Final { amount, total, .. } = first.payload
                && amount != total
            {
                return Err(OnionError::BadPayload);
            }
            let next = (!rest.is_empty()).then(|| Packet::Plain(rest.to_vec()));
            (first.payload, next, first.secret)
        }
    };
    // The payee's layer must say so, and a forward must have a next layer: a mismatch means
    // the payer built it wrong, and it is refused rather than guessed at.
    match (&payload, &next) {
        (HopPayload::Final { .. }, None) | (HopPayload::Forward { .. }, Some(_)) => {}
        _ => return Err(OnionError::BadPayload),
    }
    Ok(Peeled {
        payload,
        next,
        secret,
    })
}

fn peel_sphinx(
    packet: &Sphinx,
    own: &SecretKey,
    hashlock: B256,
) -> Result<(HopPayload, Option<Packet>, B256), OnionError> {
    if packet.version != VERSION || packet.routing.len() != ROUTING_LEN {
        return Err(OnionError::Malformed);
    }
    let ephemeral = PublicKey::from_slice(&packet.ephemeral).map_err(|_| OnionError::Malformed)?;
    let ss = B256::from(SharedSecret::new(&ephemeral, own).secret_bytes());
    mac_of(&key(&ss, b"mu"), &[&packet.routing, hashlock.as_slice()])
        .verify_slice(packet.mac.as_slice())
        .map_err(|_| OnionError::BadMac)?;
    let mut extended = packet.routing.clone();
    extended.extend_from_slice(&[0u8; FRAME_LEN]);
    xor(
        &mut extended,
        &keystream(&key(&ss, b"rho"), ROUTING_LEN + FRAME_LEN),
    );
    let payload = decode_payload(&extended[..PAYLOAD_LEN])?;
    let next_mac: [u8; MAC_LEN] = extended[PAYLOAD_LEN..FRAME_LEN]
        .try_into()
        .map_err(|_| OnionError::Malformed)?;
    let next = if next_mac == [0u8; MAC_LEN] {
        None
    } else {
        // The payer chose the next hop's key and wrote it here (MAC-protected with the rest);
        // passed on as written: the next node parses it (and refuses a malformed one).
        Some(Packet::Sphinx(Sphinx {
            version: VERSION,
            ephemeral: extended[NEXT_KEY_AT..PAYLOAD_LEN].to_vec(),
            routing: extended[FRAME_LEN..].to_vec(),
            mac: B256::from(next_mac),
        }))
    };
    Ok((payload, next, ss))
}

/// The failing node's error packet: `reason`, MACed and encrypted with its shared secret.
pub fn fail(secret: B256, reason: FailureReason) -> ErrorPacket {
    let mut msg = [0u8; FAILURE_LEN];
    msg[..2].copy_from_slice(&reason.code().to_be_bytes());
    let mut out = Vec::with_capacity(ERROR_LEN);
    out.extend_from_slice(&hmac(&key(&secret, b"um"), &msg).0);
    out.extend_from_slice(&msg);
    wrap(secret, ErrorPacket(out))
}

/// A node on the way back adds its layer to a failure from downstream.
pub fn wrap(secret: B256, mut packet: ErrorPacket) -> ErrorPacket {
    // A packet of the wrong size (a misbehaving downstream) is normalised, so that the payer
    // sees a garbled packet rather than a node refusing to pass it on.
    packet.0.resize(ERROR_LEN, 0);
    xor(
        &mut packet.0,
        &keystream(&key(&secret, b"ammag"), ERROR_LEN),
    );
    packet
}

/// The payer reads a failure with the route's shared secrets: the index of the hop that
/// failed and its reason, or `None` if no hop's MAC holds (a node garbled it).
pub fn decode_error(secrets: &[B256], packet: &ErrorPacket) -> Option<(usize, FailureReason)> {
    if packet.0.len() != ERROR_LEN {
        return None;
    }
    let mut bytes = packet.0.clone();
    for (i, ss) in secrets.iter().enumerate() {
        xor(&mut bytes, &keystream(&key(ss, b"ammag"), ERROR_LEN));
        let (mac, msg) = bytes.split_at(MAC_LEN);
        if mac_of(&key(ss, b"um"), &[msg]).verify_slice(mac).is_ok() {
            let code = u16::from_be_bytes([msg[0], msg[1]]);
            return FailureReason::from_code(code).map(|r| (i, r));
        }
    }
    None
}

fn shared_secrets<'a>(
    session: &SecretKey,
    nodes: impl Iterator<Item = &'a PublicKey>,
) -> Result<(Vec<PublicKey>, Vec<B256>), OnionError> {
    let (mut eph, mut secrets) = (Vec::new(), Vec::new());
    for (i, node) in nodes.enumerate() {
        // Hop i's ephemeral key: from the session key and the index (deterministic, unrelated
        // to the other hops' for anyone without the session key).
        let k = hmac(
            &session.secret_bytes(),
            &[b"vhub onion hop".as_slice(), &(i as u64).to_be_bytes()].concat(),
        );
        let x = SecretKey::from_byte_array(k.0).map_err(|_| OnionError::Key)?;
        eph.push(PublicKey::from_secret_key(SECP256K1, &x));
        secrets.push(B256::from(SharedSecret::new(node, &x).secret_bytes()));
    }
    Ok((eph, secrets))
}

fn encode_payload(
    p: &HopPayload,
    next: Option<&PublicKey>,
) -> Result<[u8; PAYLOAD_LEN], OnionError> {
    let bytes = postcard::to_allocvec(p).map_err(|_| OnionError::PayloadTooLong)?;
    if bytes.len() >= NEXT_KEY_AT {
        return Err(OnionError::PayloadTooLong);
    }
    let mut out = [0u8; PAYLOAD_LEN];
    // Fits in a byte: checked against NEXT_KEY_AT (63) just above.
    out[0] = bytes.len() as u8;
    out[1..=bytes.len()].copy_from_slice(&bytes);
    if let Some(k) = next {
        out[NEXT_KEY_AT..].copy_from_slice(&k.serialize());
    }
    Ok(out)
}

fn decode_payload(frame: &[u8]) -> Result<HopPayload, OnionError> {
    let len = usize::from(*frame.first().ok_or(OnionError::BadPayload)?);
    if len >= NEXT_KEY_AT {
        return Err(OnionError::BadPayload);
    }
    let body = frame.get(1..=len).ok_or(OnionError::BadPayload)?;
    postcard::from_bytes(body).map_err(|_| OnionError::BadPayload)
}

/// An HMAC-SHA256 over `parts` (checked in constant time with `verify_slice`).
fn mac_of(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        m.update(part);
    }
    m
}

fn hmac(key: &[u8], data: &[u8]) -> B256 {
    B256::from_slice(&mac_of(key, &[data]).finalize().into_bytes())
}

fn key(ss: &B256, label: &[u8]) -> [u8; 32] {
    hmac(label, ss.as_slice()).0
}

fn keystream(key: &[u8; 32], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut c = ChaCha20::new(key.into(), &[0u8; 12].into());
    c.apply_keystream(&mut out);
    out
}

fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
#[path = "onion_tests.rs"]
mod tests;
