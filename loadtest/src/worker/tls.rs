//! wss://: a rustls client session per connection, driven by the worker's sockets code. The
//! WebSocket core sees plaintext only: [`read`] turns what the socket has into plaintext in the
//! thread's buffer, [`seal`] turns the core's output into records in the connection's write
//! queue, which is written as for ws://. The upgrade request is sealed before the TLS
//! handshake completes; rustls holds it until then, so a connection's phases stay those of
//! ws:// (the handshake latency includes TLS's).

use std::io::{self, Read as _};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

use crate::error::Error;
use crate::plan::TlsPlan;

/// What every connection of a run shares: the configuration and the name the server's
/// certificate is checked against (and sent as SNI).
#[derive(Clone, Debug)]
pub struct Tls {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl Tls {
    /// Builds the client side of `plan`: verified against its roots, or not at all.
    pub fn new(plan: &TlsPlan) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS protocol versions", e))?;
        let mut config = match &plan.ca {
            Some(file) => builder
                .with_root_certificates(roots(file)?)
                .with_no_client_auth(),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        let name = match &plan.server_name {
            Some(n) => {
                Some(ServerName::try_from(n.clone()).map_err(|e| invalid("--tls-server-name", e))?)
            }
            None => None,
        };
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
    }

    /// A session for a connection to `peer` (named by its address unless a name was given).
    pub fn session(&self, peer: std::net::SocketAddr) -> io::Result<Box<ClientConnection>> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        let mut conn =
            ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        conn.set_buffer_limit(None);
        Ok(Box::new(conn))
    }
}

fn invalid(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        what,
        source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
    }
}

/// The PEM certificates in `file` as trust anchors.
fn roots(file: &Path) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| invalid("read --tls-ca", format!("{}: {e}", file.display())))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| invalid("read --tls-ca", format!("{}: {e}", file.display())))?;
        store
            .add(cert)
            .map_err(|e| invalid("read --tls-ca", format!("{}: {e}", file.display())))?;
    }
    if store.is_empty() {
        return Err(invalid(
            "read --tls-ca",
            format!("{}: no PEM certificate in it", file.display()),
        ));
    }
    Ok(store)
}

/// `--tls-insecure`: any certificate is accepted; the handshake's signatures are still
/// checked, so the session is a real one (and costs the server what a verified one costs).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
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

/// Reads plaintext into `buf`: what the session already decrypted, else what the socket has.
/// `Ok(0)`: the server ended the stream (with or without close_notify). `WouldBlock`: nothing
/// more now. Records the session must send on the way (the rest of the handshake, the request
/// it held, an alert) are appended to `wq` for the caller to write.
pub fn read(
    conn: &mut ClientConnection,
    sock: &mut mio::net::TcpStream,
    buf: &mut [u8],
    wq: &mut Vec<u8>,
) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        match conn.read_tls(sock) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                let state = conn.process_new_packets();
                // A fatal alert for the server is queued even when processing failed.
                records(conn, wq)?;
                state.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts `bytes` (held inside the session until the handshake is done) and appends the
/// records ready to go to `wq`, which then holds ciphertext like a plain connection's holds
/// frames: the fixed-rate sender's backpressure check sees both alike.
pub fn seal(conn: &mut ClientConnection, bytes: &[u8], wq: &mut Vec<u8>) -> io::Result<()> {
    io::Write::write_all(&mut conn.writer(), bytes)?;
    records(conn, wq)
}

/// Moves the session's pending records to `wq`.
fn records(conn: &mut ClientConnection, wq: &mut Vec<u8>) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(wq)?;
    }
    Ok(())
}
