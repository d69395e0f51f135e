//! Signed submissions: a tenant signs the text of every spec it submits with its
//! Ed25519 key; the master verifies the signature against the tenant's registered
//! public key before anything is proposed, and keeps the key id with the version.
//!
//! What is signed is [`CONTEXT`] followed by the spec text exactly as sent, so a
//! signature made for something else with the same key can never pass for a spec.

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

/// Prefix of every signed message (domain separation).
pub const CONTEXT: &[u8] = b"weir-spec-v1\n";

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The private key file is not a PKCS#8 Ed25519 key.
    #[error("not an Ed25519 private key (PKCS#8 PEM): {0}")]
    PrivateKey(String),
    /// The public key text is not `weir-ed25519 <64 hex digits>`.
    #[error("not a public key of the form `weir-ed25519 <64 hex digits>`")]
    PublicKey,
}

/// A tenant's signing key.
pub struct Signer {
    pair: Ed25519KeyPair,
}

fn message(spec: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + spec.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(spec.as_bytes());
    m
}

/// The id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, public);
    hex(&d.as_ref()[..8])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The text form of a public key: `weir-ed25519 <hex>`.
pub fn public_key_text(public: &[u8]) -> String {
    format!("weir-ed25519 {}\n", hex(public))
}

/// Parses [`public_key_text`]'s form.
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, SignError> {
    let h = text
        .trim()
        .strip_prefix("weir-ed25519 ")
        .ok_or(SignError::PublicKey)?
        .trim();
    if h.len() != PUBLIC_KEY_LEN * 2 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignError::PublicKey);
    }
    (0..PUBLIC_KEY_LEN)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| SignError::PublicKey))
        .collect()
}

impl Signer {
    /// A new random key; answers it with its PKCS#8 PEM (to store).
    pub fn generate() -> Result<(Self, String), SignError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| SignError::PrivateKey(e.to_string()))?;
        let pem = pair.serialize_pem();
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// A key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, SignError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| SignError::PrivateKey(e.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| SignError::PrivateKey(e.to_string()))?;
        Ok(Self { pair })
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Its id ([`key_id`]).
    pub fn key_id(&self) -> String {
        key_id(self.public_key())
    }

    /// Signs a spec's text.
    pub fn sign(&self, spec: &str) -> Vec<u8> {
        self.pair.sign(&message(spec)).as_ref().to_vec()
    }
}

/// Whether `signature` is `public`'s signature of `spec`.
pub fn verify(public: &[u8], spec: &str, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&message(spec), signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_spec_and_key() {
        let (signer, pem) = Signer::generate().unwrap();
        let again = Signer::from_pem(&pem).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let spec = "name: a\ntenant: acme\n";
        let sig = signer.sign(spec);
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert!(verify(signer.public_key(), spec, &sig));
        assert!(!verify(
            signer.public_key(),
            "name: a\ntenant: acme \n",
            &sig
        ));
        let (other, _) = Signer::generate().unwrap();
        assert!(!verify(other.public_key(), spec, &sig));
        assert!(!verify(signer.public_key(), spec, &sig[..63]));
        // Signed without the context, the same bytes are not a spec signature.
        let bare = signer.pair.sign(spec.as_bytes());
        assert!(!verify(signer.public_key(), spec, bare.as_ref()));
    }

    #[test]
    fn public_keys_round_trip_as_text() {
        let (signer, _) = Signer::generate().unwrap();
        let text = public_key_text(signer.public_key());
        assert_eq!(parse_public_key(&text).unwrap(), signer.public_key());
        assert_eq!(signer.key_id().len(), 16);
        for bad in ["", "weir-ed25519 00", "ed25519 ab", &text.replace('a', "g")] {
            if bad != text {
                assert!(parse_public_key(bad).is_err(), "{bad}");
            }
        }
    }
}
