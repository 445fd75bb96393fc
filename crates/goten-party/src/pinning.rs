//! Pinned certificates for the TCP transport: a party's TLS identity, and the verifier that
//! accepts exactly the certificate pinned for the peer's role (no CA, no names).
//!
//! Where it sits: under [`crate::tcp`], which builds its TLS client and server configurations
//! with [`Pinned`] as both the server and the client certificate verifier, and runs each
//! accepted connection's handshake within a time limit ([`server_handshake`]).

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goten_enclave::Role;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, ServerConnection, SignatureScheme, StreamOwned,
};

use crate::transport::NetError;

/// A party's TLS identity: certificate and PKCS#8 private key (DER).
#[derive(Clone)]
pub struct Identity {
    /// Self-signed certificate.
    pub cert: Vec<u8>,
    /// Private key, PKCS#8 DER.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(<redacted key>)")
    }
}

impl Identity {
    /// A fresh self-signed identity.
    pub fn generate(name: &str) -> Result<Identity, NetError> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()])
            .map_err(|e| setup(format!("cannot generate a certificate: {e}")))?;
        Ok(Identity {
            cert: c.cert.der().to_vec(),
            key: c.signing_key.serialize_der(),
        })
    }
}

pub(crate) fn setup(msg: String) -> NetError {
    NetError::Unexpected {
        peer: Role::S0,
        expected: "a working TLS setup".into(),
        got: msg,
    }
}

/// Accepts exactly one pinned certificate per connection.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) allowed: Vec<Vec<u8>>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.allowed.iter().any(|c| c.as_slice() == cert.as_ref()) {
            Ok(())
        } else {
            Err(rustls::Error::General(
                "certificate is not pinned for any expected peer".into(),
            ))
        }
    }

    fn sig12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn sig13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end).map(|_| ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end).map(|_| ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// Seconds an accepted connection has to complete its TLS handshake.
pub const HANDSHAKE_SECS: u64 = 5;

/// Runs the server side of a TLS handshake on `tcp` within `limit`; `None` when the client
/// fails it (unknown certificate, garbage) or does not finish in time.
pub(crate) fn server_handshake(
    tcp: TcpStream,
    cfg: &Arc<rustls::ServerConfig>,
    limit: Duration,
) -> Option<StreamOwned<ServerConnection, TcpStream>> {
    let until = Instant::now() + limit;
    tcp.set_nonblocking(false).ok()?;
    tcp.set_read_timeout(Some(limit)).ok()?;
    tcp.set_write_timeout(Some(limit)).ok()?;
    let mut stream = StreamOwned::new(ServerConnection::new(cfg.clone()).ok()?, tcp);
    while stream.conn.is_handshaking() {
        if Instant::now() > until || stream.conn.complete_io(&mut stream.sock).is_err() {
            return None;
        }
    }
    stream.sock.set_write_timeout(None).ok()?;
    Some(stream)
}
