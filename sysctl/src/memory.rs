//! The RAM budget: how many connections a host's memory can hold.
//!
//! Every connection is counted with **both ends on this host** (the server and a load generator
//! side by side, as in the project's own load tests), which is the conservative case for a server
//! alone. An idle TCP socket costs ~4.0-4.2 KiB of kernel memory on this kernel (socket, inode,
//! dentry, file, epoll item; see docs/TUNING.md for the measurement), and a connection also needs
//! user-space state. The sum must fit in [`RAM_BUDGET_PERCENT`] of `MemTotal`, leaving the rest
//! to the page cache, the rest of the system and busy socket buffers (`net.ipv4.tcp_mem`).

/// Kernel memory per idle TCP socket, rounded up (measured 4.0-4.2 KiB on this kernel).
pub const KERNEL_BYTES_PER_SOCKET: u64 = 4352;
/// Sockets per connection when the server and the load generator share the host.
pub const SOCKETS_PER_CONNECTION: u64 = 2;
/// User-space budget per connection, both ends together. A budget, not a measurement: the
/// engine's own per-connection state plus the load generator's.
pub const USER_BYTES_PER_CONNECTION: u64 = 2048;
/// Everything one connection is budgeted: 2 × 4352 + 2048 = 10,752 bytes (10.5 KiB).
pub const BYTES_PER_CONNECTION: u64 =
    SOCKETS_PER_CONNECTION * KERNEL_BYTES_PER_SOCKET + USER_BYTES_PER_CONNECTION;
/// Share of `MemTotal` that connections may take.
pub const RAM_BUDGET_PERCENT: u64 = 80;

/// Bytes that `target` connections are budgeted.
pub fn bytes_needed(target: u64) -> u64 {
    target.saturating_mul(BYTES_PER_CONNECTION)
}

/// The most connections that fit in [`RAM_BUDGET_PERCENT`] of `mem_total_kb` KiB.
pub fn max_connections(mem_total_kb: u64) -> u64 {
    let budget = u128::from(mem_total_kb) * 1024 * u128::from(RAM_BUDGET_PERCENT) / 100;
    let max = budget / u128::from(BYTES_PER_CONNECTION);
    u64::try_from(max).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_budgeted_ten_and_a_half_kib() {
        assert_eq!(BYTES_PER_CONNECTION, 10_752);
    }

    #[test]
    fn this_machines_24_gib_holds_about_1_88_million() {
        // MemTotal of the development host (24683656 kB):
        // 24683656 * 1024 * 0.8 / 10752 = 1,880,659.6
        assert_eq!(max_connections(24_683_656), 1_880_659);
    }

    #[test]
    fn budget_scales_with_ram_and_never_overflows() {
        assert_eq!(max_connections(0), 0);
        // 2 GiB: 2097152 KiB * 1024 * 0.8 / 10752 = 159,783
        assert_eq!(max_connections(2 * 1024 * 1024), 159_783);
        assert!(max_connections(u64::MAX) > 0);
        assert_eq!(bytes_needed(u64::MAX), u64::MAX);
    }
}
