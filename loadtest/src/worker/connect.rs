//! Opening one client socket: non-blocking, `TCP_NODELAY`, optionally bound to a source address
//! with `IP_BIND_ADDRESS_NO_PORT` (the port is chosen per 4-tuple at connect time), then
//! `connect()`, which completes later (the socket becomes writable).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// Starts a connection from `source` (or the kernel's choice) to `target`.
pub fn start(source: Option<IpAddr>, target: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        sys::set_bind_address_no_port(socket.as_raw_fd())?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connects_from_the_given_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let sock = start(Some("127.0.0.3".parse().unwrap()), target).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(sock.local_addr().unwrap().ip(), peer.ip());
    }

    #[test]
    fn refused_connections_report_the_error() {
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        match start(None, target) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            Ok(sock) => {
                std::thread::sleep(Duration::from_millis(50));
                let err = sock.take_error().unwrap().expect("refused");
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            }
        }
    }
}
