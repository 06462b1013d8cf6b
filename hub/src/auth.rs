//! Peer authentication bound to the QUIC connection.
//!
//! TLS certificates are self-signed and not trusted for identity; identity is the Ethereum key.
//! Each side signs `keccak256("vhub-auth-v1" ‖ role ‖ exporter)` where `exporter` is 32 bytes of
//! TLS keying material exported for this connection (RFC 5705/8446 exporter, label
//! [`EXPORTER_LABEL`]). Both ends of one TLS session compute the same exporter and no other
//! session shares it, so a proof captured on one connection is worthless on another, and a
//! man in the middle (who runs two TLS sessions) cannot forward a proof across. The role byte
//! stops a server's proof from being reflected back as a client's. See ADR 0005.

use alloy::primitives::{Address, B256, Signature, keccak256};
use htlc::sig::{Keys, SignatureError, verify};

/// TLS exporter label of the auth binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-vhub-auth-v1";

/// Which end of the connection signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that opened the connection.
    Client,
    /// The side that accepted it.
    Server,
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The proof's signature is malformed, high-s, or by another key than claimed.
    #[error("bad proof: {0}")]
    BadProof(#[from] SignatureError),
    /// The peer is not who we expected to reach.
    #[error("expected {expected}, peer is {actual}")]
    UnexpectedPeer {
        /// Who we dialled.
        expected: Address,
        /// Who answered.
        actual: Address,
    },
    /// The first frame was not an auth frame, or the connection failed first.
    #[error("no proof: {0}")]
    Missing(String),
    /// TLS keying material could not be exported.
    #[error("cannot export keying material")]
    Exporter,
}

/// The digest a side signs for one connection.
pub fn auth_digest(exporter: &[u8; 32], role: Role) -> B256 {
    let mut buf = Vec::with_capacity(12 + 1 + 32);
    buf.extend_from_slice(b"vhub-auth-v1");
    buf.push(match role {
        Role::Client => 0,
        Role::Server => 1,
    });
    buf.extend_from_slice(exporter);
    keccak256(buf)
}

/// The connection's exporter secret.
pub fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], AuthError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| AuthError::Exporter)?;
    Ok(out)
}

/// Our proof for this connection.
pub fn prove(keys: &Keys, exporter: &[u8; 32], role: Role) -> Signature {
    keys.sign_digest(auth_digest(exporter, role))
}

/// Check the peer's proof: `address` signed this connection's digest for `role`.
pub fn check(
    exporter: &[u8; 32],
    role: Role,
    address: Address,
    sig: &Signature,
) -> Result<(), AuthError> {
    verify(auth_digest(exporter, role), sig, address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_is_bound_to_connection_and_role() {
        let k = Keys::from_bytes([5; 32]).unwrap();
        let (e1, e2) = ([1u8; 32], [2u8; 32]);
        let p = prove(&k, &e1, Role::Client);
        assert!(check(&e1, Role::Client, k.address(), &p).is_ok());
        assert!(check(&e2, Role::Client, k.address(), &p).is_err());
        assert!(check(&e1, Role::Server, k.address(), &p).is_err());
        let other = Keys::from_bytes([6; 32]).unwrap();
        assert!(check(&e1, Role::Client, other.address(), &p).is_err());
    }
}
