//! `c10m serve --tls-cert --tls-key`, run as the built binary: wss:// with an independent
//! client (tungstenite over a rustls client stream), the certificate reloaded on SIGHUP while
//! an old connection stays open, and files that cannot be used refused with their reason.
//! Certificates are made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_c10m");

type Tls = StreamOwned<ClientConnection, TcpStream>;
type Wss = tungstenite::WebSocket<Tls>;

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn pair() -> Pair {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("c10m-cli-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, pair: &Pair) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    (cert, key)
}

/// `c10m ARGS` with `VARS` and no other `C10M_*` variable from the test's environment.
fn command(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("C10M_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG")
        .args(args)
        .envs(vars.iter().copied());
    cmd
}

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    command(args, vars).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tls_connect(addr: SocketAddr, trusted: &CertificateDer<'static>) -> std::io::Result<Tls> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
        .unwrap();
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn wss(addr: SocketAddr, trusted: &CertificateDer<'static>) -> Wss {
    let tls = tls_connect(addr, trusted).unwrap();
    let url = format!("wss://localhost:{}/echo", addr.port());
    let (ws, response) = tungstenite::client(url, tls).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

fn echo(ws: &mut Wss, text: &str) {
    ws.send(Message::text(text)).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Waits (bounded) until `ok()` holds; the signal is handled asynchronously.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) with a child's pid and a valid signal number touches no memory.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {pid}");
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let (old, new) = (pair(), pair());
    let d = dir("reload");
    let (cert, key) = write(&d, &old);
    let log = d.join("stderr.log");
    let child = command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--io",
            support::io_backend(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let mut server = support::KillOnDrop(child);
    let pid = server.0.id();
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening on wss://"), "{first}");
    let addr = support::addr_after(&first, "wss://");

    let mut before = wss(addr, &old.der);
    echo(&mut before, "before the reload");

    write(&d, &new);
    sighup(pid);
    // Until the signal is handled a new handshake may still get the old certificate.
    eventually("a handshake with the new certificate", || {
        tls_connect(addr, &new.der).is_ok()
    });
    assert!(
        tls_connect(addr, &old.der).is_err(),
        "the old certificate is still served after the reload"
    );
    let mut after = wss(addr, &new.der);
    echo(&mut after, "after the reload");
    echo(&mut before, "the old connection stays open");

    // A key that does not match: the pair in use stays, and the error is logged.
    std::fs::write(&key, &old.key_pem).unwrap();
    sighup(pid);
    eventually("the reload error in the log", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("not reloaded")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("does not match"), "{text}");
    let mut still = wss(addr, &new.der);
    echo(&mut still, "the new pair stays in use");
    echo(&mut before, "and the first connection is still open");
}

#[test]
fn unusable_files_are_refused_with_the_reason() {
    let (a, b) = (pair(), pair());
    let d = dir("errors");
    let (cert, key) = write(&d, &a);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let missing = d.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let other_key = d.join("other-key.pem");
    std::fs::write(&other_key, &b.key_pem).unwrap();
    let other_key = other_key.to_str().unwrap();
    // (arguments, exit code, a phrase of the error)
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--tls-cert", cert],
            2,
            "tls_cert is given without tls_key: give both (--tls-cert and --tls-key)",
        ),
        (&["--tls-key", key], 2, "tls_key is given without tls_cert"),
        (
            &["--tls-cert", missing, "--tls-key", key],
            1,
            "cannot read tls_cert",
        ),
        (
            &["--tls-cert", cert, "--tls-key", missing],
            1,
            "cannot read tls_key",
        ),
        (
            &["--tls-cert", cert, "--tls-key", other_key],
            1,
            "tls_key does not match the certificate in tls_cert",
        ),
        (
            &["--tls-cert", key, "--tls-key", cert],
            1,
            "no PEM certificate",
        ),
    ];
    for (args, code, phrase) in cases {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let o = run(&all, &[]);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(phrase), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} started");
    }
    // The variables and the TOML keys reach the same check.
    let o = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("C10M_TLS_CERT", cert)],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("tls_cert is given without tls_key"));
    let toml = d.join("c.toml");
    std::fs::write(&toml, format!("tls_key = {key:?}\n")).unwrap();
    let o = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            toml.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("tls_key is given without tls_cert"));
}
