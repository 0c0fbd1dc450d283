//! Reading the host: a server's resident memory (`/proc/PID/status`), kernel memory
//! (`/proc/meminfo` Slab), socket counts (`/proc/net/sockstat`) and the host's CPU time
//! (`/proc/stat`). Parsers are separate from file reading so they can be tested on sample text.
//! CPU use over time is measured in `cpu.rs`.

use serde::{Deserialize, Serialize};

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    kb_field(status, "VmRSS:")
}

/// `Slab` of a `/proc/meminfo` text, in bytes.
pub fn parse_slab(meminfo: &str) -> Option<u64> {
    kb_field(meminfo, "Slab:")
}

fn kb_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// Busy and total time of all CPUs from the `cpu` line of `/proc/stat`, in clock ticks, and the
/// number of CPUs it adds up (the `cpuN` lines). Busy counts user, nice, system, irq, softirq and
/// steal (time a virtual machine was denied).
pub fn parse_proc_stat(stat: &str) -> Option<(u64, u64, u32)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let idle = at(3) + at(4);
    let cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some((busy, busy + idle, u32::try_from(cpus).ok()?.max(1)))
}

/// The TCP line of `/proc/net/sockstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockStat {
    /// All sockets in use.
    pub sockets_used: u64,
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// TCP sockets in TIME_WAIT.
    pub tcp_tw: u64,
    /// TCP sockets allocated.
    pub tcp_alloc: u64,
    /// Pages charged to TCP buffers.
    pub tcp_mem_pages: u64,
}

/// Parses `/proc/net/sockstat`.
pub fn parse_sockstat(text: &str) -> SockStat {
    let mut s = SockStat::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let head = words.next();
        let pairs: Vec<&str> = words.collect();
        let value = |name: &str| {
            pairs
                .chunks(2)
                .find(|kv| kv.first() == Some(&name))
                .and_then(|kv| kv.get(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        match head {
            Some("sockets:") => s.sockets_used = value("used"),
            Some("TCP:") => {
                s.tcp_inuse = value("inuse");
                s.tcp_tw = value("tw");
                s.tcp_alloc = value("alloc");
                s.tcp_mem_pages = value("mem");
            }
            _ => {}
        }
    }
    s
}

/// This process's resident memory.
pub fn self_rss_bytes() -> Option<u64> {
    parse_vmrss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// One reading of the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Resident memory of the server processes, added up (bytes).
    pub server_rss_bytes: u64,
    /// How many of them were readable.
    pub servers_alive: u64,
    /// Kernel slab memory (bytes).
    pub slab_bytes: u64,
    /// Socket counts.
    pub sockstat: SockStat,
}

/// Reads the server processes' memory and the kernel's.
#[derive(Clone, Debug)]
pub struct Sampler {
    pids: Vec<u32>,
}

impl Sampler {
    /// For these server pids (may be empty: kernel figures only).
    pub fn new(pids: Vec<u32>) -> Self {
        Sampler { pids }
    }

    /// The server processes.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Reads everything now.
    pub fn sample(&self) -> Sample {
        let mut s = Sample::default();
        for pid in &self.pids {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                s.servers_alive += 1;
                s.server_rss_bytes += parse_vmrss(&status).unwrap_or(0);
            }
        }
        if let Ok(m) = std::fs::read_to_string("/proc/meminfo") {
            s.slab_bytes = parse_slab(&m).unwrap_or(0);
        }
        if let Ok(t) = std::fs::read_to_string("/proc/net/sockstat") {
            s.sockstat = parse_sockstat(&t);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts() {
        let status = "Name:\tc10m\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(12_345 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        let meminfo =
            "MemTotal:       24683000 kB\nSlab:             345678 kB\nSReclaimable: 1 kB\n";
        assert_eq!(parse_slab(meminfo), Some(345_678 * 1024));
        let proc_stat = "cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 50 2 25 400 10 1 1 5 0 0\ncpu1 50 3 25 400 10 2 1 5 0 0\ncpufreq x\n";
        assert_eq!(parse_proc_stat(proc_stat), Some((170, 990, 2)));
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
        let sockstat = "sockets: used 60213\nTCP: inuse 60004 orphan 0 tw 12 alloc 60010 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(
            parse_sockstat(sockstat),
            SockStat {
                sockets_used: 60_213,
                tcp_inuse: 60_004,
                tcp_tw: 12,
                tcp_alloc: 60_010,
                tcp_mem_pages: 7,
            }
        );
    }

    #[test]
    fn reads_this_process_and_the_kernel() {
        let me = std::process::id();
        let s = Sampler::new(vec![me]).sample();
        assert_eq!(s.servers_alive, 1);
        assert!(s.server_rss_bytes > 0 && s.slab_bytes > 0);
        assert!(self_rss_bytes().unwrap() > 0);
        let gone = Sampler::new(vec![u32::MAX]).sample();
        assert_eq!(gone.servers_alive, 0);
    }
}
