//! UDP sockets of the shard's applications under io_uring: registered edge-triggered in a
//! per-shard epoll instance that the ring polls (multishot); readable sockets are read by the
//! shard with recvmmsg, as under epoll.

use std::os::fd::AsRawFd;

use io_uring::{opcode, types};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::super::shard::Shard;
use super::{Uring, tag, uio};

impl Uring {
    /// Watches the UDP sockets applications bound since the last call: edge-triggered in the
    /// shard's UDP epoll instance (made on first use), which the ring polls. A socket that
    /// cannot be watched is reported and never read.
    pub(super) fn watch_udp(&mut self, shard: &mut Shard) {
        let fresh = shard.core.udp.take_fresh();
        if fresh.is_empty() {
            return;
        }
        if self.udp.is_none() {
            match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
                Ok(e) => self.udp = Some(e),
                Err(e) => {
                    tracing::error!(shard = shard.core.shard, error = %e, "cannot watch UDP sockets");
                    return;
                }
            }
        }
        let Some(epoll) = &self.udp else {
            return;
        };
        for (slot, fd) in fresh {
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
            // SAFETY: `fd` belongs to a UDP socket the shard owns and keeps open while it is
            // registered; closing it removes the registration.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if let Err(e) = epoll.add(sock, EpollEvent::new(flags, u64::from(slot))) {
                tracing::error!(shard = shard.core.shard, error = %e, "cannot watch a UDP socket");
                continue;
            }
            // Datagrams may have arrived before the registration.
            self.udp_again.push(slot);
        }
        self.arm_udp(shard);
    }

    /// The UDP epoll instance is readable: the sockets it reports are read at the end of the
    /// completions.
    pub(super) fn udp_ready(&mut self) {
        let mut events = std::mem::take(&mut self.parked_events);
        while let Some(epoll) = &self.udp {
            let n = match epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => 0,
            };
            self.udp_again
                .extend(events[..n].iter().map(|e| e.data() as u32));
            if n < events.len() {
                break;
            }
        }
        self.parked_events = events;
    }

    pub(super) fn arm_udp(&mut self, shard: &mut Shard) {
        let Some(epoll) = &self.udp else {
            return;
        };
        if self.udp_armed {
            return;
        }
        let fd = epoll.0.as_raw_fd();
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(tag::UDP);
        uio(shard).push(entry);
        self.udp_armed = true;
    }
}
