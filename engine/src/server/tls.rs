//! wss://: TLS with rustls, one `rustls::ServerConnection` per connection, driven sans-IO by the
//! shared half of the shard (never by a backend): ciphertext a backend received goes into
//! rustls and the plaintext out of it into the WebSocket core ([`Sessions::open`]); the core's
//! output (the cork, a frame published to many) goes into rustls and the ciphertext out of it
//! into the connection's write path ([`Sessions::seal`]), which then writes it like any other
//! bytes, with syscalls (epoll) or sends (io_uring).
//!
//! A published frame is still encoded once; it is encrypted once per connection (each has its
//! own keys). Kernel TLS, which would let the kernel encrypt a shared frame, needs the `tls`
//! ULP, which this host's kernel does not offer (`/proc/sys/net/ipv4/tcp_available_ulp`
//! lists only `mptcp`).
//!
//! The state lives in a table beside the connection slab, not in the slot, so a plain
//! connection's slot is no larger for TLS existing. The certificate and key are behind a lock
//! that [`Acceptor::reload`] swaps (SIGHUP in `c10m serve`): new handshakes get the new pair,
//! open connections keep theirs.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate and key could not be used. Nothing is swapped when loading fails.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// `tls_cert` or `tls_key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE`, or one that is not PEM.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair: a key it cannot sign with, or one that does not match the
    /// certificate's public key.
    Rejected {
        /// What rustls said.
        source: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { what, path, source } => {
                write!(f, "cannot read {what} {}: {source}", path.display())
            }
            TlsError::NoCertificate { path } => write!(
                f,
                "tls_cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ),
            TlsError::NoKey { path } => write!(
                f,
                "tls_key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
                path.display()
            ),
            TlsError::Rejected {
                source: rustls::Error::InconsistentKeys(_),
            } => write!(f, "tls_key does not match the certificate in tls_cert"),
            TlsError::Rejected { source } => write!(f, "unusable certificate or key: {source}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rejected { source } => Some(source),
            _ => None,
        }
    }
}

/// The certificate in use, swapped whole by a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole pair (the writer only assigns an Arc).
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The server's TLS side, shared by every shard: rustls' settings and the certificate files.
#[derive(Debug)]
pub struct Acceptor {
    config: Arc<rustls::ServerConfig>,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    cert: PathBuf,
    key: PathBuf,
}

impl Acceptor {
    /// Loads the PEM certificate chain and private key; ALPN offers `http/1.1`.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = load(cert, key, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rejected { source })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Acceptor {
            config: Arc::new(config),
            current,
            provider,
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Reads the files again; new handshakes use the new pair, open connections keep theirs.
    /// On an error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load(&self.cert, &self.key, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        Ok(())
    }

    /// A session for a new connection.
    fn session(&self) -> Result<ServerConnection, rustls::Error> {
        let mut conn = ServerConnection::new(self.config.clone())?;
        // Output is taken out of rustls right after it is put in (the write path bounds it).
        conn.set_buffer_limit(None);
        Ok(conn)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// A certificate chain and its key, checked to belong together.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read("tls_cert", cert)?;
    let key_pem = read("tls_key", key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| TlsError::NoCertificate {
            path: cert.to_owned(),
        })?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key.to_owned(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::Rejected { source })?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|source| TlsError::Rejected { source })?;
    Ok(pair)
}

/// What [`Sessions::open`] found besides plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// More may come.
    Open,
    /// The peer sent `close_notify`: no more input.
    Ended,
    /// The TLS handshake failed (an alert is queued for the peer).
    HandshakeFailed,
    /// The records were bad after the handshake (an alert is queued for the peer).
    Failed,
}

/// A shard's TLS sessions, by connection slot.
#[derive(Debug)]
pub struct Sessions {
    acceptor: Arc<Acceptor>,
    by_slot: Vec<Option<Box<ServerConnection>>>,
    /// Scratch for ciphertext on its way to a write queue.
    sealed: Vec<u8>,
    /// Scratch for plaintext on its way to the protocol.
    plain: Vec<u8>,
}

impl Sessions {
    /// No sessions yet.
    pub fn new(acceptor: Arc<Acceptor>) -> Self {
        Sessions {
            acceptor,
            by_slot: Vec::new(),
            sealed: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// Starts the session of the connection just put in `slot`.
    pub fn start(&mut self, slot: usize) -> Result<(), rustls::Error> {
        let conn = self.acceptor.session()?;
        if slot >= self.by_slot.len() {
            self.by_slot.resize_with(slot + 1, || None);
        }
        self.by_slot[slot] = Some(Box::new(conn));
        Ok(())
    }

    /// Forgets the session of a connection that is gone.
    pub fn end(&mut self, slot: usize) {
        if let Some(s) = self.by_slot.get_mut(slot) {
            *s = None;
        }
    }

    /// Whether `slot` speaks TLS.
    pub fn has(&self, slot: usize) -> bool {
        self.by_slot.get(slot).is_some_and(Option::is_some)
    }

    /// Decrypts `cipher` (all of it) into `plain` (appended). Records cut short stay inside
    /// rustls until the rest arrives.
    pub fn open(&mut self, slot: usize, mut cipher: &[u8], plain: &mut Vec<u8>) -> Opened {
        let Some(conn) = self.by_slot.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return Opened::Failed;
        };
        loop {
            // Never an empty read: rustls would take it for the peer's EOF.
            if cipher.is_empty() {
                return Opened::Open;
            }
            // rustls takes a bounded amount per call (its plaintext buffer must be emptied
            // between calls); the loop ends when `cipher` is used up or no progress is made.
            // An error here is rustls' full buffer: processing below empties it.
            let took: usize = conn.read_tls(&mut cipher).unwrap_or_default();
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(_) if conn.is_handshaking() => return Opened::HandshakeFailed,
                Err(_) => return Opened::Failed,
            };
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let at = plain.len();
                plain.resize(at + ready, 0);
                if conn.reader().read_exact(&mut plain[at..]).is_err() {
                    plain.truncate(at);
                    return Opened::Failed;
                }
            }
            if state.peer_has_closed() {
                return Opened::Ended;
            }
            if took == 0 && ready == 0 {
                // rustls would not take more and had nothing to hand out: it cannot move.
                return Opened::Failed;
            }
        }
    }

    /// Encrypts `plain` for `slot` and appends to `out` everything rustls has to send, in
    /// order (handshake records and alerts before the new data). False if `slot` has no
    /// session or rustls refused.
    pub fn seal(&mut self, slot: usize, plain: &[&[u8]], out: &mut Vec<u8>) -> bool {
        let Some(conn) = self.by_slot.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return false;
        };
        for part in plain {
            if !part.is_empty() && conn.writer().write_all(part).is_err() {
                return false;
            }
        }
        while conn.wants_write() {
            match conn.write_tls(out) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    }

    /// The scratch buffer for plaintext, taken (give it back with
    /// [`Sessions::restore_plain`]).
    pub fn take_plain(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.plain);
        v.clear();
        v
    }

    /// Gives the plaintext scratch buffer back (a huge one is dropped).
    pub fn restore_plain(&mut self, v: Vec<u8>) {
        if v.capacity() <= 1 << 20 {
            self.plain = v;
        }
    }

    /// Queues `close_notify` for `slot` (its ciphertext comes out of the next
    /// [`Sessions::seal`]); once only, and not after a fatal alert.
    pub fn close_notify(&mut self, slot: usize) {
        if let Some(conn) = self.by_slot.get_mut(slot).and_then(|s| s.as_deref_mut()) {
            conn.send_close_notify();
        }
    }

    /// The scratch buffer for ciphertext, taken (give it back with [`Sessions::restore`]).
    pub fn take_scratch(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.sealed);
        v.clear();
        v
    }

    /// Gives the scratch buffer back (a huge one is dropped).
    pub fn restore(&mut self, v: Vec<u8>) {
        if v.capacity() <= 1 << 20 {
            self.sealed = v;
        }
    }
}
