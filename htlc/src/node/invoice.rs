//! Invoices: what a payee hands its payer, as a string a person can copy.

use crate::amount::Amount;
use crate::ids::Hashlock;
use alloy::primitives::Address;
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

/// Prefix of encoded invoices.
const INVOICE_PREFIX: &str = "vhub1";

/// A request to be paid, made by the payee and handed to the payer (as [`Invoice::encode`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Who is paid.
    pub payee: Address,
    /// The payee's public key (the payer builds its onion layer with it); its address is
    /// `payee` ([`Invoice::decode`] refuses an invoice where it is not).
    pub payee_key: PublicKey,
    /// The hub the payee has its channel with.
    pub hub: Address,
    /// Amount the payee receives.
    pub amount: Amount,
    /// `sha256(preimage)`; only the payee knows the preimage.
    pub hashlock: Hashlock,
    /// Unix time after which the payee refuses the payment.
    pub expires_at: u64,
    /// Seconds the payee's HTLC must leave before it expires.
    pub final_expiry_delta: u64,
}

/// An invoice string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// It does not start with `vhub1`.
    #[error("not a vhub invoice (it must start with {INVOICE_PREFIX})")]
    Prefix,
    /// It is not hex, or does not decode, or its checksum is wrong.
    #[error("corrupt invoice: {0}")]
    Corrupt(&'static str),
}

impl Invoice {
    /// The invoice as a string a person can copy: `vhub1` + hex(postcard(invoice) ‖ 4-byte
    /// checksum), the checksum being the first bytes of its sha256.
    pub fn encode(&self) -> String {
        use sha2::Digest;
        // Postcard serialisation of plain fields cannot fail.
        let mut bytes = postcard::to_allocvec(self).unwrap_or_default();
        let sum = sha2::Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..4]);
        format!("{INVOICE_PREFIX}{}", alloy::primitives::hex::encode(bytes))
    }

    /// Read an invoice string.
    pub fn decode(s: &str) -> Result<Invoice, InvoiceError> {
        use sha2::Digest;
        let hex = s
            .trim()
            .strip_prefix(INVOICE_PREFIX)
            .ok_or(InvoiceError::Prefix)?;
        let bytes =
            alloy::primitives::hex::decode(hex).map_err(|_| InvoiceError::Corrupt("not hex"))?;
        if bytes.len() < 5 {
            return Err(InvoiceError::Corrupt("too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if sha2::Sha256::digest(body)[..4] != *sum {
            return Err(InvoiceError::Corrupt("checksum mismatch"));
        }
        let invoice: Invoice =
            postcard::from_bytes(body).map_err(|_| InvoiceError::Corrupt("bad encoding"))?;
        if crate::sig::address_of(&invoice.payee_key) != invoice.payee {
            return Err(InvoiceError::Corrupt("the payee key is not the payee's"));
        }
        Ok(invoice)
    }
}
