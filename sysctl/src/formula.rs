//! The formulas that `settings.tsv` names: what each setting must be for `N` connections.
//!
//! Every constant here is explained in docs/TUNING.md; keep the two in step.

use crate::requirement::{Requirement, Rule};

/// Descriptors left for the rest of the system on top of the connections (`fs.file-max`).
pub const FD_MARGIN_HOST: u64 = 65_536;
/// Descriptors per process on top of the connections: listeners, epoll, eventfds, logs, stdio.
pub const FD_MARGIN_PROCESS: u64 = 1024;
/// The kernel's ceiling for `fs.nr_open` on 64-bit: `INT_MAX & -BITS_PER_LONG`.
pub const NR_OPEN_MAX: u64 = 2_147_483_584;
/// The largest target planned: beyond it `fs.nr_open` cannot cover 2 × N + margin descriptors.
pub const MAX_TARGET: u64 = (NR_OPEN_MAX - FD_MARGIN_PROCESS) / 2;
/// `net.core.somaxconn` and `net.ipv4.tcp_max_syn_backlog`.
pub const BACKLOG: u64 = 65_535;
/// `net.core.netdev_max_backlog`.
pub const NETDEV_BACKLOG: u64 = 16_384;
/// `net.ipv4.ip_local_port_range` when the current range is narrower: every port above the
/// privileged ones. Even start, odd end, as the kernel documentation advises.
pub const PORT_RANGE: [u64; 2] = [1024, 65_535];
/// Largest `min` of `tcp_rmem`/`tcp_wmem`, bytes.
pub const BUFFER_MIN: u64 = 4096;
/// Largest `default` of `tcp_rmem`/`tcp_wmem`, bytes.
pub const BUFFER_DEFAULT: u64 = 16_384;
/// Pages of socket buffer budgeted per connection at `tcp_mem` pressure.
pub const TCP_MEM_PAGES_PER_CONNECTION: u64 = 1;
/// `tcp_mem` max may take at most 1/this of RAM (20%: with the 80% idle budget of
/// [`memory`](crate::memory) the worst case stays within RAM).
pub const TCP_MEM_RAM_DIVISOR: u64 = 5;
/// Page size `tcp_mem` is counted in (4 KiB on x86_64 and on most aarch64 kernels).
pub const PAGE_KB: u64 = 4;
/// `vm.max_map_count`.
pub const MAP_COUNT: u64 = 262_144;

/// A formula of `settings.tsv`. `N` is the target number of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Formula {
    /// `fds_host`: at least 2 × N + [`FD_MARGIN_HOST`] (both ends of every connection on one
    /// host, plus everything else the system has open).
    FdsHost,
    /// `fds_process`: at least 2 × N + [`FD_MARGIN_PROCESS`] (one process may hold both ends,
    /// as the in-process tests do).
    FdsProcess,
    /// `backlog`: at least [`BACKLOG`].
    Backlog,
    /// `netdev_backlog`: at least [`NETDEV_BACKLOG`].
    NetdevBacklog,
    /// `port_range`: a range at least as wide as [`PORT_RANGE`], else [`PORT_RANGE`].
    PortRange,
    /// `tcp_mem`: pressure at N × [`TCP_MEM_PAGES_PER_CONNECTION`] pages, capped so that max
    /// stays within 1/[`TCP_MEM_RAM_DIVISOR`] of RAM; min and max at 3/4 and 3/2 of pressure,
    /// the kernel's own proportions. Each number at least that.
    TcpMem,
    /// `small_buffers`: min at most [`BUFFER_MIN`], default at most [`BUFFER_DEFAULT`], max kept.
    SmallBuffers,
    /// `tw_reuse`: exactly 1 (2, the default, allows reuse on loopback only).
    TwReuse,
    /// `per_connection`: at least N.
    PerConnection,
    /// `conntrack`: at least 2 × N (every connection plus as many closing ones lingering in
    /// TIME_WAIT while clients reconnect).
    Conntrack,
    /// `map_count`: at least [`MAP_COUNT`].
    MapCount,
}

const NAMES: [(&str, Formula); 11] = [
    ("fds_host", Formula::FdsHost),
    ("fds_process", Formula::FdsProcess),
    ("backlog", Formula::Backlog),
    ("netdev_backlog", Formula::NetdevBacklog),
    ("port_range", Formula::PortRange),
    ("tcp_mem", Formula::TcpMem),
    ("small_buffers", Formula::SmallBuffers),
    ("tw_reuse", Formula::TwReuse),
    ("per_connection", Formula::PerConnection),
    ("conntrack", Formula::Conntrack),
    ("map_count", Formula::MapCount),
];

impl Formula {
    /// The formula `settings.tsv` calls `name`.
    pub fn from_name(name: &str) -> Option<Formula> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The name `settings.tsv` uses.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| *n)
    }

    /// How many numbers the setting holds.
    pub fn arity(self) -> usize {
        match self {
            Formula::PortRange => 2,
            Formula::TcpMem | Formula::SmallBuffers => 3,
            _ => 1,
        }
    }

    /// What the setting must be for `target` connections on a host with `mem_total_kb` KiB.
    pub fn requirement(self, target: u64, mem_total_kb: u64) -> Requirement {
        let twice = target.saturating_mul(2);
        let each = |rules: &[Rule]| Requirement::Each(rules.to_vec());
        match self {
            Formula::FdsHost => each(&[Rule::AtLeast(twice.saturating_add(FD_MARGIN_HOST))]),
            Formula::FdsProcess => each(&[Rule::AtLeast(twice.saturating_add(FD_MARGIN_PROCESS))]),
            Formula::Backlog => each(&[Rule::AtLeast(BACKLOG)]),
            Formula::NetdevBacklog => each(&[Rule::AtLeast(NETDEV_BACKLOG)]),
            Formula::PortRange => Requirement::Span {
                ports: PORT_RANGE[1] - PORT_RANGE[0] + 1,
                replacement: PORT_RANGE,
            },
            Formula::TcpMem => {
                let [min, pressure, max] = tcp_mem_pages(target, mem_total_kb);
                each(&[
                    Rule::AtLeast(min),
                    Rule::AtLeast(pressure),
                    Rule::AtLeast(max),
                ])
            }
            Formula::SmallBuffers => each(&[
                Rule::AtMost(BUFFER_MIN),
                Rule::AtMost(BUFFER_DEFAULT),
                Rule::Keep,
            ]),
            Formula::TwReuse => each(&[Rule::Exactly(1)]),
            Formula::PerConnection => each(&[Rule::AtLeast(target)]),
            Formula::Conntrack => each(&[Rule::AtLeast(twice)]),
            Formula::MapCount => each(&[Rule::AtLeast(MAP_COUNT)]),
        }
    }
}

/// `tcp_mem` (min, pressure, max) in pages for `target` connections and `mem_total_kb` KiB.
pub fn tcp_mem_pages(target: u64, mem_total_kb: u64) -> [u64; 3] {
    let ram_pages = mem_total_kb / PAGE_KB;
    // max = pressure * 3 / 2 <= ram_pages / DIVISOR  <=>  pressure <= ram_pages * 2 / (3 * DIVISOR)
    let pressure_cap = ram_pages.saturating_mul(2) / (3 * TCP_MEM_RAM_DIVISOR);
    let pressure = target
        .saturating_mul(TCP_MEM_PAGES_PER_CONNECTION)
        .min(pressure_cap);
    [
        pressure.saturating_mul(3) / 4,
        pressure,
        pressure.saturating_mul(3) / 2,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_HOST_KB: u64 = 24_683_656;

    #[test]
    fn names_round_trip() {
        for (name, f) in NAMES {
            assert_eq!(Formula::from_name(name), Some(f));
            assert_eq!(f.name(), name);
        }
        assert_eq!(Formula::from_name("nope"), None);
    }

    #[test]
    fn descriptors_cover_both_ends_plus_margin() {
        assert_eq!(
            Formula::FdsHost.requirement(1_000_000, DEV_HOST_KB),
            Requirement::Each(vec![Rule::AtLeast(2_065_536)])
        );
        assert_eq!(
            Formula::FdsProcess.requirement(1_000_000, DEV_HOST_KB),
            Requirement::Each(vec![Rule::AtLeast(2_001_024)])
        );
        // The largest target still fits fs.nr_open's ceiling.
        assert_eq!(2 * MAX_TARGET + FD_MARGIN_PROCESS, NR_OPEN_MAX);
    }

    #[test]
    fn per_connection_and_conntrack_follow_n() {
        assert_eq!(
            Formula::PerConnection.requirement(750_000, DEV_HOST_KB),
            Requirement::Each(vec![Rule::AtLeast(750_000)])
        );
        assert_eq!(
            Formula::Conntrack.requirement(750_000, DEV_HOST_KB),
            Requirement::Each(vec![Rule::AtLeast(1_500_000)])
        );
    }

    #[test]
    fn tcp_mem_grows_with_n_in_kernel_proportions() {
        // 200k connections: 200k pages at pressure, well under the RAM cap.
        assert_eq!(
            tcp_mem_pages(200_000, DEV_HOST_KB),
            [150_000, 200_000, 300_000]
        );
    }

    #[test]
    fn tcp_mem_is_capped_by_ram() {
        // 24683656 KiB = 6,170,914 pages; max may take a fifth: pressure <= 6170914*2/15 = 822,788.
        let [min, pressure, max] = tcp_mem_pages(1_000_000, DEV_HOST_KB);
        assert_eq!([min, pressure, max], [617_091, 822_788, 1_234_182]);
        assert!(max <= DEV_HOST_KB / PAGE_KB / TCP_MEM_RAM_DIVISOR);
        // A 2 GiB host caps far lower, whatever N.
        assert_eq!(tcp_mem_pages(10_000_000, 2 * 1024 * 1024)[1], 69_905);
    }

    #[test]
    fn arity_matches_the_requirement() {
        for (_, f) in NAMES {
            if let Requirement::Each(rules) = f.requirement(1000, DEV_HOST_KB) {
                assert_eq!(rules.len(), f.arity(), "{f:?}");
            } else {
                assert_eq!(f.arity(), 2, "{f:?}");
            }
        }
    }
}
