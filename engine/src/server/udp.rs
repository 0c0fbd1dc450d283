//! UDP sockets on a shard: an application binds them ([`Ctx::bind_udp`](super::Ctx::bind_udp)),
//! the shard's backend watches them, datagrams arrive in batches (`recvmmsg`) at
//! [`App::on_datagrams`](super::App::on_datagrams), and datagrams sent during an iteration go
//! out in batches (`sendmmsg`) at its end. A media path (an SFU's RTP and RTCP) lives here, on
//! the thread that owns its room, with no hop per packet.
//!
//! Under both backends the socket is read and written with these two calls; the backend only
//! says when it is readable (epoll: edge-triggered readiness; io_uring: a multishot poll).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use slab::Slab;

/// The receive and send buffer each UDP socket asks for (capped by the kernel).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket of this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpId(pub(crate) u32);

/// One received datagram, borrowed from the shard's receive batch.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// Who sent it.
    pub from: SocketAddr,
    /// Its payload.
    pub data: &'a [u8],
}

/// Datagrams read or written per system call.
pub const BATCH: usize = 32;
/// The largest datagram received whole; longer ones are dropped (and counted) — above any
/// path MTU a media stream uses.
pub const DATAGRAM_MAX: usize = 2048;
/// Largest payload a UDP datagram can carry over IPv4.
const PAYLOAD_MAX: usize = 65_507;

/// Why a datagram was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpError {
    /// No such socket on this shard (closed, or never bound).
    Gone,
    /// Larger than a UDP datagram can be.
    TooLarge,
}

/// Counters of the shard's UDP traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received and handed to applications.
    pub received: u64,
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams dropped: too long to receive whole, or refused by a full send buffer.
    pub dropped: u64,
}

struct Socket {
    sock: UdpSocket,
    app: u8,
    /// Queued datagrams: destination and end offset in `bytes`.
    out: Vec<(SockaddrStorage, usize)>,
    bytes: Vec<u8>,
}

/// Reused receive state: the buffers and the kernel's headers. Built on the shard's thread.
struct Rx {
    bufs: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    got: Vec<(SocketAddr, usize)>,
}

/// The shard's UDP sockets.
#[derive(Default)]
pub struct Udp {
    socks: Slab<Socket>,
    fresh: Vec<(u32, RawFd)>,
    dirty: Vec<u32>,
    rx: Option<Box<Rx>>,
    /// Counters.
    pub stats: UdpStats,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp")
            .field("sockets", &self.socks.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// What a read of one socket gave.
pub enum Received {
    /// This many datagrams are in the batch (0: the call was interrupted); more may be
    /// waiting.
    Batch(usize),
    /// Nothing more to read now.
    Empty,
}

impl Udp {
    /// Binds a non-blocking socket for application `app`; the backend registers it before it
    /// next waits.
    pub fn bind(&mut self, addr: SocketAddr, app: u8) -> io::Result<UdpId> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        // One socket carries many peers (an SFU: every participant of the shard's rooms), so
        // bursts such as hundreds of DTLS handshakes at once overflow the default ~200 KiB
        // and drop datagrams; the kernel clamps these to net.core.rmem_max / wmem_max.
        let s = socket2::SockRef::from(&sock);
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        let fd = sock.as_raw_fd();
        let slot = self.socks.insert(Socket {
            sock,
            app,
            out: Vec::new(),
            bytes: Vec::new(),
        }) as u32;
        self.fresh.push((slot, fd));
        Ok(UdpId(slot))
    }

    /// Closes a socket (its queued datagrams are dropped); false if there was none.
    pub fn close(&mut self, id: UdpId) -> bool {
        self.fresh.retain(|(s, _)| *s != id.0);
        self.socks.try_remove(id.0 as usize).is_some()
    }

    /// The socket's local address.
    pub fn local_addr(&self, id: UdpId) -> Option<SocketAddr> {
        self.socks.get(id.0 as usize)?.sock.local_addr().ok()
    }

    /// The application that owns a socket.
    pub fn app(&self, id: UdpId) -> Option<u8> {
        self.socks.get(id.0 as usize).map(|s| s.app)
    }

    /// Sockets bound since the last call, for the backend to watch.
    pub fn take_fresh(&mut self) -> Vec<(u32, RawFd)> {
        std::mem::take(&mut self.fresh)
    }

    /// Queues a datagram; it goes out with the others at the end of the iteration (or at once
    /// when a batch is full).
    pub fn send(&mut self, id: UdpId, to: SocketAddr, data: &[u8]) -> Result<(), UdpError> {
        if data.len() > PAYLOAD_MAX {
            return Err(UdpError::TooLarge);
        }
        let sock = self.socks.get_mut(id.0 as usize).ok_or(UdpError::Gone)?;
        if sock.out.is_empty() {
            self.dirty.push(id.0);
        }
        sock.bytes.extend_from_slice(data);
        sock.out.push((SockaddrStorage::from(to), sock.bytes.len()));
        if sock.out.len() >= BATCH {
            self.flush_one(id.0);
        }
        Ok(())
    }

    /// Sends everything queued this iteration.
    pub fn flush(&mut self) {
        for slot in std::mem::take(&mut self.dirty) {
            self.flush_one(slot);
        }
    }

    fn flush_one(&mut self, slot: u32) {
        let Some(sock) = self.socks.get_mut(slot as usize) else {
            return;
        };
        let fd = sock.sock.as_raw_fd();
        let mut at = 0;
        while at < sock.out.len() {
            let start = if at == 0 { 0 } else { sock.out[at - 1].1 };
            let n = (sock.out.len() - at).min(BATCH);
            let mut slices = Vec::with_capacity(n);
            let mut addrs = Vec::with_capacity(n);
            let mut from = start;
            for (addr, end) in &sock.out[at..at + n] {
                slices.push([IoSlice::new(&sock.bytes[from..*end])]);
                addrs.push(Some(*addr));
                from = *end;
            }
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(n, None);
            let no_cmsgs: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            match sendmmsg(
                fd,
                &mut headers,
                &slices,
                &addrs,
                no_cmsgs,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(results) => {
                    let sent = results.count();
                    self.stats.sent += sent as u64;
                    if sent == 0 {
                        break;
                    }
                    at += sent;
                }
                Err(Errno::EINTR) => {}
                // A full send buffer, or an error for one destination (unreachable, refused):
                // UDP is lossy; drop that one and go on.
                Err(_) => {
                    self.stats.dropped += 1;
                    at += 1;
                }
            }
        }
        self.stats.dropped += (sock.out.len() - at) as u64;
        sock.out.clear();
        sock.bytes.clear();
        if sock.bytes.capacity() > BATCH * DATAGRAM_MAX {
            sock.bytes = Vec::new();
        }
    }

    /// Reads one batch from a socket into the shard's receive buffers.
    pub fn receive(&mut self, id: UdpId) -> Received {
        let Some(sock) = self.socks.get(id.0 as usize) else {
            return Received::Empty;
        };
        let fd = sock.sock.as_raw_fd();
        let rx = self.rx.get_or_insert_with(|| {
            Box::new(Rx {
                bufs: vec![0; BATCH * DATAGRAM_MAX],
                headers: MultiHeaders::preallocate(BATCH, None),
                got: Vec::with_capacity(BATCH),
            })
        });
        rx.got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = rx
            .bufs
            .chunks_mut(DATAGRAM_MAX)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let results = match recvmmsg(
            fd,
            &mut rx.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(Errno::EINTR) => return Received::Batch(0),
            // EAGAIN, or an ICMP error queued on the socket: nothing to hand over now.
            Err(_) => return Received::Empty,
        };
        let mut truncated = 0;
        for msg in results {
            if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                truncated += 1;
                rx.got
                    .push((SocketAddr::from(([0, 0, 0, 0], 0)), usize::MAX));
                continue;
            }
            let from = msg.address.and_then(|a| to_socket_addr(&a));
            let from = from.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            rx.got.push((from, msg.bytes));
        }
        self.stats.dropped += truncated;
        if rx.got.is_empty() {
            return Received::Empty;
        }
        Received::Batch(rx.got.len().max(1))
    }

    /// The batch read last, as datagrams (truncated ones left out). Takes the receive state
    /// out so that an application can be called while it is borrowed; give it back with
    /// [`Udp::restore`].
    pub fn take_batch(&mut self) -> Option<RxBatch> {
        self.rx.take().map(RxBatch)
    }

    /// Puts the receive state back after [`Udp::take_batch`].
    pub fn restore(&mut self, batch: RxBatch) {
        let RxBatch(rx) = batch;
        self.stats.received += rx.got.iter().filter(|(_, n)| *n != usize::MAX).count() as u64;
        self.rx = Some(rx);
    }
}

/// A received batch, taken out of the shard while an application reads it.
pub struct RxBatch(Box<Rx>);

impl std::fmt::Debug for RxBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxBatch")
            .field("len", &self.0.got.len())
            .finish()
    }
}

impl RxBatch {
    /// The datagrams, in arrival order.
    pub fn datagrams(&self) -> Vec<Datagram<'_>> {
        self.0
            .got
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n != usize::MAX)
            .map(|(i, &(from, n))| Datagram {
                from,
                data: &self.0.bufs[i * DATAGRAM_MAX..i * DATAGRAM_MAX + n],
            })
            .collect()
    }
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back() {
        let mut udp = Udp::default();
        let a = udp.bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let b = udp.bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        assert_eq!(udp.take_fresh().len(), 2);
        let to = udp.local_addr(b).unwrap();
        for i in 0..40u8 {
            udp.send(a, to, &[i; 100]).unwrap();
        }
        udp.flush();
        assert_eq!(udp.stats.sent, 40);
        let mut seen = Vec::new();
        while let Received::Batch(_) = udp.receive(b) {
            let batch = udp.take_batch().unwrap();
            for d in batch.datagrams() {
                assert_eq!(d.from, udp.local_addr(a).unwrap());
                assert_eq!(d.data.len(), 100);
                seen.push(d.data[0]);
            }
            udp.restore(batch);
        }
        assert_eq!(seen, (0..40).collect::<Vec<u8>>());
        assert_eq!(udp.stats.received, 40);
        assert_eq!(
            udp.send(a, to, &vec![0; PAYLOAD_MAX + 1]),
            Err(UdpError::TooLarge)
        );
        assert!(udp.close(a));
        assert_eq!(udp.send(a, to, b"x"), Err(UdpError::Gone));
    }

    #[test]
    fn a_socket_asks_for_large_buffers() {
        let mut udp = Udp::default();
        let a = udp.bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let sock = &udp.socks[a.0 as usize].sock;
        let got = socket2::SockRef::from(sock).recv_buffer_size().unwrap();
        // The kernel caps the request at net.core.rmem_max and reports twice what it keeps.
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(got >= SOCKET_BUFFER.min(max), "{got} (rmem_max {max})");
    }

    #[test]
    fn an_oversized_datagram_is_dropped_and_counted() {
        let mut udp = Udp::default();
        let a = udp.bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let b = udp.bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let to = udp.local_addr(b).unwrap();
        udp.send(a, to, &[1; DATAGRAM_MAX + 1]).unwrap();
        udp.send(a, to, &[2; 10]).unwrap();
        udp.flush();
        let mut got = Vec::new();
        while let Received::Batch(_) = udp.receive(b) {
            let batch = udp.take_batch().unwrap();
            got.extend(batch.datagrams().iter().map(|d| d.data.to_vec()));
            udp.restore(batch);
        }
        assert_eq!(got, vec![vec![2u8; 10]]);
        assert_eq!(udp.stats.dropped, 1);
    }
}
