//! QUIC endpoints (quinn, TLS 1.3) and the authenticated session handshake.
//!
//! One connection per peer; the client opens one bidirectional stream that carries all frames
//! in order. The first frame each way is [`Frame::Auth`] (client first); nothing else is read
//! before the peer's proof checks out.

use crate::auth::{self, AuthError, Role};
use crate::wire::{self, ErrorCode, Frame};
use alloy::primitives::Address;
use htlc::sig::Keys;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// ALPN protocol id.
pub const ALPN: &[u8] = b"vhub/1";

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up endpoints or sessions.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Certificate generation or TLS configuration failed.
    #[error("tls setup: {0}")]
    Tls(String),
    /// Binding or connecting failed.
    #[error("io: {0}")]
    Io(String),
    /// The peer did not authenticate.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// A frame could not be read or written.
    #[error("wire: {0}")]
    Wire(#[from] wire::WireError),
    /// The handshake took too long.
    #[error("handshake timed out")]
    Timeout,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server endpoint on `addr` with a fresh self-signed certificate.
pub fn server(addr: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    let cert = rcgen::generate_simple_self_signed(vec!["vhub".into()])
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30))
            .map_err(|e| TransportError::Tls(e.to_string()))?,
    ));
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(config, addr).map_err(|e| TransportError::Io(e.to_string()))
}

/// Accepts any server certificate: identity is proven by the Ethereum key bound to the TLS
/// exporter (module [`crate::auth`]), not by the certificate.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client endpoint bound to an OS-assigned loopback-or-any port matching `server`'s family.
pub fn client(bind: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    let p = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| TransportError::Io(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // A hub that vanished without closing (killed, network gone) is noticed within 10 s and
    // dialled again; keep-alives hold a healthy but quiet session open.
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(10))
            .map_err(|e| TransportError::Tls(e.to_string()))?,
    ));
    transport.keep_alive_interval(Some(Duration::from_secs(3)));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// An authenticated session: the peer's address and the ordered frame stream.
pub struct Session {
    /// The peer's proven address.
    pub peer: Address,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// Frames to the peer.
    pub send: quinn::SendStream,
    /// Frames from the peer.
    pub recv: quinn::RecvStream,
}

/// Dial `addr` and authenticate both ways. With `expect`, refuse any other server identity.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    keys: &Keys,
    expect: Option<Address>,
    max_frame: usize,
) -> Result<Session, TransportError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let conn = endpoint
            .connect(addr, "vhub")
            .map_err(|e| TransportError::Io(e.to_string()))?
            .await
            .map_err(|e| TransportError::Io(e.to_string()))?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| TransportError::Io(e.to_string()))?;
        let ex = auth::exporter(&conn)?;
        let proof = Frame::Auth {
            address: keys.address(),
            sig: auth::prove(keys, &ex, Role::Client),
        };
        wire::write_frame(&mut send, &proof).await?;
        let peer = match wire::read_frame(&mut recv, max_frame).await? {
            Some(Frame::Auth { address, sig }) => {
                auth::check(&ex, Role::Server, address, &sig)?;
                address
            }
            Some(Frame::Error { detail, .. }) => {
                return Err(AuthError::Missing(format!("refused: {detail}")).into());
            }
            other => return Err(AuthError::Missing(format!("{other:?}")).into()),
        };
        if let Some(expected) = expect
            && expected != peer
        {
            return Err(AuthError::UnexpectedPeer {
                expected,
                actual: peer,
            }
            .into());
        }
        Ok(Session {
            peer,
            conn,
            send,
            recv,
        })
    })
    .await
    .map_err(|_| TransportError::Timeout)?
}

/// Accept one incoming connection's stream and authenticate the client. A failed proof is
/// answered with [`ErrorCode::Unauthenticated`] and the connection is closed.
pub async fn accept(
    incoming: quinn::Incoming,
    keys: &Keys,
    max_frame: usize,
) -> Result<Session, TransportError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let conn = incoming
            .await
            .map_err(|e| TransportError::Io(e.to_string()))?;
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| TransportError::Io(e.to_string()))?;
        let ex = auth::exporter(&conn)?;
        let result = match wire::read_frame(&mut recv, max_frame).await {
            Ok(Some(Frame::Auth { address, sig })) => {
                auth::check(&ex, Role::Client, address, &sig).map(|()| address)
            }
            Ok(other) => Err(AuthError::Missing(format!("first frame {other:?}"))),
            Err(e) => Err(AuthError::Missing(e.to_string())),
        };
        let peer = match result {
            Ok(p) => p,
            Err(e) => {
                let refusal = Frame::Error {
                    code: ErrorCode::Unauthenticated,
                    detail: e.to_string(),
                };
                // Best effort: the connection is closed right after either way.
                let _ = wire::write_frame(&mut send, &refusal).await;
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
                conn.close(1u32.into(), b"unauthenticated");
                return Err(e.into());
            }
        };
        let proof = Frame::Auth {
            address: keys.address(),
            sig: auth::prove(keys, &ex, Role::Server),
        };
        wire::write_frame(&mut send, &proof).await?;
        Ok(Session {
            peer,
            conn,
            send,
            recv,
        })
    })
    .await
    .map_err(|_| TransportError::Timeout)?
}
