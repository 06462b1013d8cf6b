//! Signing and verifying state digests.
//!
//! The hot path uses libsecp256k1 (the `secp256k1` crate): the `core` benchmark measured it
//! several times faster than alloy's pure-Rust k256 for both signing and recovery (figures in the
//! README). Alloy's types stay at the edges: keys come from an alloy [`PrivateKeySigner`] and
//! signatures go out as alloy [`Signature`]s, which the chain client submits unchanged.
//!
//! Verification *recovers* the signer rather than checking against a known public key: a
//! key-check accepts either recovery id, and a signature with the wrong `v` would pass here yet
//! recover to a stranger on chain, leaving us holding a state we cannot enforce.

use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, SECP256K1, SecretKey};

/// Half the order of secp256k1: a signature with `s` above it is malleable (high-s) and rejected.
pub const SECP256K1_HALF_ORDER: U256 = U256::from_limbs([
    0xDFE9_2F46_681B_20A0,
    0x5D57_6E73_57A4_501D,
    0xFFFF_FFFF_FFFF_FFFF,
    0x7FFF_FFFF_FFFF_FFFF,
]);

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `s` is in the upper half of the curve order: a malleable twin of a valid signature.
    #[error("high-s (malleable) signature")]
    HighS,
    /// The bytes are not a valid signature, or no key recovers from them.
    #[error("malformed signature")]
    Malformed,
    /// The signature is valid but made by someone other than the expected signer.
    #[error("signed by {actual}, expected {expected}")]
    WrongSigner {
        /// Who was supposed to sign.
        expected: Address,
        /// Who did.
        actual: Address,
    },
}

/// A participant's signing key, held in the libsecp256k1 form used on the hot path.
#[derive(Clone)]
pub struct Keys {
    secret: SecretKey,
    /// Derived once: deriving it costs a scalar multiplication (about 15 µs), and the payee
    /// checks it against every incoming payment's invoice.
    public: PublicKey,
    address: Address,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({})", self.address)
    }
}

impl Keys {
    /// Keys from an alloy local signer (the form key files and the CLI use).
    pub fn from_signer(signer: &PrivateKeySigner) -> Self {
        let bytes = signer.credential().to_bytes();
        // A PrivateKeySigner always holds a valid, non-zero scalar below the curve order, which
        // is exactly what SecretKey accepts.
        #[allow(clippy::expect_used)]
        let secret = SecretKey::from_byte_array(bytes.into()).expect("alloy key is a valid scalar");
        Keys::from_secret(secret)
    }

    /// Keys from 32 secret bytes; `None` if they are not a valid secp256k1 scalar.
    pub fn from_bytes(bytes: [u8; 32]) -> Option<Self> {
        SecretKey::from_byte_array(bytes)
            .ok()
            .map(Keys::from_secret)
    }

    fn from_secret(secret: SecretKey) -> Self {
        let public = PublicKey::from_secret_key(SECP256K1, &secret);
        Keys {
            secret,
            public,
            address: address_of(&public),
        }
    }

    /// The Ethereum address of these keys.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The public key (what a payer builds onion layers for; its address is [`Keys::address`]).
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Peel our layer off an onion `packet` handed with an HTLC locked to `hashlock`.
    pub fn peel(
        &self,
        packet: &crate::onion::Packet,
        hashlock: B256,
    ) -> Result<crate::onion::Peeled, crate::onion::OnionError> {
        crate::onion::peel(packet, &self.secret, hashlock)
    }

    /// The onion session key of our payment `id` (derived, so the machine needs no randomness).
    pub fn onion_session(&self, id: B256) -> Result<SecretKey, crate::onion::OnionError> {
        crate::onion::session_key(&self.secret.secret_bytes(), id)
    }

    /// Sign a 32-byte digest. libsecp256k1 always produces low-s signatures (RFC 6979 nonces).
    pub fn sign_digest(&self, digest: B256) -> Signature {
        let msg = Message::from_digest(digest.0);
        let sig = SECP256K1.sign_ecdsa_recoverable(msg, &self.secret);
        let (recid, bytes) = sig.serialize_compact();
        let odd = i32::from(recid) == 1;
        Signature::from_bytes_and_parity(&bytes, odd)
    }
}

/// The Ethereum address of a public key: the last 20 bytes of keccak256 of its uncompressed form.
pub fn address_of(public: &PublicKey) -> Address {
    let uncompressed = public.serialize_uncompressed();
    Address::from_slice(&keccak256(&uncompressed[1..])[12..])
}

/// Recover who signed `digest`, refusing high-s signatures.
pub fn recover(digest: B256, sig: &Signature) -> Result<Address, SignatureError> {
    recover_public(digest, sig).map(|k| address_of(&k))
}

/// The public key that signed `digest` (high-s refused).
fn recover_public(digest: B256, sig: &Signature) -> Result<PublicKey, SignatureError> {
    if sig.s() > SECP256K1_HALF_ORDER {
        return Err(SignatureError::HighS);
    }
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let recid = RecoveryId::try_from(i32::from(sig.v())).map_err(|_| SignatureError::Malformed)?;
    let rsig = RecoverableSignature::from_compact(&compact, recid)
        .map_err(|_| SignatureError::Malformed)?;
    SECP256K1
        .recover_ecdsa(Message::from_digest(digest.0), &rsig)
        .map_err(|_| SignatureError::Malformed)
}

/// The public key of `expected`, from its signature over `digest` (refused if someone else
/// signed).
pub fn recover_key(
    digest: B256,
    sig: &Signature,
    expected: Address,
) -> Result<PublicKey, SignatureError> {
    let key = recover_public(digest, sig)?;
    let actual = address_of(&key);
    if actual == expected {
        Ok(key)
    } else {
        Err(SignatureError::WrongSigner { expected, actual })
    }
}

/// Check that `expected` signed `digest` (low-s, right recovery id).
pub fn verify(digest: B256, sig: &Signature, expected: Address) -> Result<(), SignatureError> {
    let actual = recover(digest, sig)?;
    if actual == expected {
        Ok(())
    } else {
        Err(SignatureError::WrongSigner { expected, actual })
    }
}

/// The high-s twin of a signature (same `r`, `s' = n - s`, flipped parity): valid for plain
/// ECDSA, and exactly what a malleability attack submits. Used by tests of every layer.
pub fn malleate(sig: &Signature) -> Signature {
    let n = SECP256K1_HALF_ORDER * U256::from(2) + U256::from(1);
    Signature::new(sig.r(), n - sig.s(), !sig.v())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;

    #[test]
    fn libsecp_and_alloy_agree() {
        let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        let keys = Keys::from_signer(&signer);
        assert_eq!(keys.address(), signer.address());
        let digest = keccak256(b"state");
        let ours = keys.sign_digest(digest);
        // RFC 6979 is deterministic: both implementations produce the same bytes.
        let theirs = signer.sign_hash_sync(&digest).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(recover(digest, &ours), Ok(signer.address()));
        assert_eq!(
            ours.recover_address_from_prehash(&digest).unwrap(),
            signer.address()
        );
    }

    #[test]
    fn high_s_twin_is_refused() {
        let keys = Keys::from_bytes([9; 32]).unwrap();
        let digest = keccak256(b"x");
        let sig = keys.sign_digest(digest);
        let twin = malleate(&sig);
        // The twin is a valid ECDSA signature by the same key (alloy, which allows high-s,
        // recovers it) ...
        assert_eq!(
            twin.recover_address_from_prehash(&digest).unwrap(),
            keys.address()
        );
        // ... and we refuse it.
        assert_eq!(recover(digest, &twin), Err(SignatureError::HighS));
    }

    #[test]
    fn wrong_signer_and_wrong_parity_are_refused() {
        let a = Keys::from_bytes([1; 32]).unwrap();
        let b = Keys::from_bytes([2; 32]).unwrap();
        let digest = keccak256(b"y");
        let sig = a.sign_digest(digest);
        assert_eq!(
            verify(digest, &sig, b.address()),
            Err(SignatureError::WrongSigner {
                expected: b.address(),
                actual: a.address()
            })
        );
        let flipped = Signature::new(sig.r(), sig.s(), !sig.v());
        assert!(verify(digest, &flipped, a.address()).is_err());
    }
}
