//! Every libc call of the crate, each behind a safe function. Nothing else in the crate is
//! `unsafe`.

use std::io;
use std::os::fd::RawFd;

/// `CLOCK_MONOTONIC` in microseconds. It is the same clock in every process of the host, so
/// timestamps written by a publisher in one worker process can be compared with the clock of a
/// subscriber in another.
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call, and CLOCK_MONOTONIC is a
    // clock id every Linux kernel supports; clock_gettime(2) only writes into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` on a socket that is about to be bound to a source address
/// with port 0: the port is then picked at `connect()`, per (source, destination) 4-tuple, so
/// one source address is not limited to one ephemeral port range across all destinations.
pub fn set_bind_address_no_port(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call; the option
    // value points to a c_int that lives across the call and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The open-file limit of this process after raising the soft limit to the hard one (allowed
/// without privileges): `(soft, hard)`.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that outlives the call; setrlimit(2) only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Clock ticks per second, the unit of utime/stime in `/proc/PID/stat`.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf(3) with a valid name has no preconditions and touches no caller memory.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_us();
        assert!(a > 0 && b >= a + 2_000, "{a} then {b}");
    }

    #[test]
    fn limits_are_readable() {
        let (soft, hard) = raise_nofile().unwrap();
        assert!(soft <= hard && soft > 0);
        assert!(clock_ticks_per_sec() >= 1);
    }

    #[test]
    fn bind_no_port_is_accepted_on_a_tcp_socket() {
        use std::os::fd::AsRawFd;
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_bind_address_no_port(s.as_raw_fd()).unwrap();
        assert!(set_bind_address_no_port(-1).is_err());
    }
}
