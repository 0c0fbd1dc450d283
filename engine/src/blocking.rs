//! A minimal echo server over `std::net`, one thread per connection, built on [`crate::proto`].
//!
//! It exists to exercise the protocol core against real clients (the Autobahn suite, browsers)
//! before the sharded event loop lands; it is not the engine and is not meant for many
//! connections.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::handshake::{self, Accept, Limits};
use crate::proto::{Config, Connection, Error, Event, Message, Read};

/// Settings of the reference echo server.
#[derive(Clone, Debug)]
pub struct EchoServer {
    /// Protocol limits and timers.
    pub config: Arc<Config>,
    /// Handshake limits.
    pub limits: Limits,
    /// How long a client may take to finish its handshake (slowloris guard).
    pub handshake_timeout: Duration,
}

impl Default for EchoServer {
    fn default() -> Self {
        EchoServer {
            config: Arc::new(Config::default()),
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl EchoServer {
    /// Accepts connections forever, echoing every message on its own thread.
    pub fn run(&self, listener: TcpListener) -> io::Result<()> {
        loop {
            let (stream, _) = match listener.accept() {
                Ok(pair) => pair,
                // EMFILE and friends: back off instead of spinning.
                Err(e) if e.raw_os_error().is_some() => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let server = self.clone();
            std::thread::spawn(move || {
                let _ = server.serve(stream);
            });
        }
    }

    /// Binds `addr` and runs on a background thread; returns the bound address.
    pub fn spawn(self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        std::thread::spawn(move || self.run(listener));
        Ok(local)
    }

    /// Serves one connection to the end.
    pub fn serve(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let start = Instant::now();
        let now = || start.elapsed().as_millis() as u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut filled = 0;
        let mut out = Vec::new();

        // Opening handshake.
        stream.set_read_timeout(Some(self.handshake_timeout))?;
        let head_len = loop {
            let n = stream.read(&mut buf[filled..])?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
            match handshake::parse_request(&buf[..filled], self.limits) {
                Ok(Some((request, head_len))) => {
                    handshake::write_accept(&request, &Accept::default(), &mut out);
                    break head_len;
                }
                Ok(None) if filled == buf.len() => buf.resize(buf.len() * 2, 0),
                Ok(None) => {}
                Err(e) => {
                    handshake::write_reject(&e, &mut out);
                    stream.write_all(&out)?;
                    return Ok(());
                }
            }
        };
        stream.write_all(&out)?;
        out.clear();
        stream.set_read_timeout(None)?;
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;

        let mut conn = Connection::server(self.config.clone(), now());
        loop {
            // Drain every whole frame in the buffer.
            let mut start_at = 0;
            let mut closed = false;
            loop {
                match conn.recv(&mut buf[start_at..filled], &mut out, now()) {
                    Ok(Read::Incomplete { frame_len }) => {
                        if let Some(len) = frame_len {
                            if len > buf.len() {
                                buf.resize(len, 0);
                            }
                        }
                        break;
                    }
                    Ok(Read::Frame { consumed, event }) => {
                        match event {
                            Some(Event::Message(Message::Text(t))) => {
                                let _ = conn.send_text(&t, &mut out);
                            }
                            Some(Event::Message(Message::Binary(b))) => {
                                let _ = conn.send_binary(&b, &mut out);
                            }
                            Some(Event::Close(_)) => closed = true,
                            _ => {}
                        }
                        start_at += consumed;
                        if closed {
                            break;
                        }
                    }
                    Err(Error::Closed) | Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !out.is_empty() {
                stream.write_all(&out)?;
                out.clear();
            }
            if closed {
                // The server closes the TCP connection first (section 7.1.1).
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
            buf.copy_within(start_at..filled, 0);
            filled -= start_at;
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[filled..])?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        }
    }
}
