//! Whether io_uring can run here, and the ring itself: the sysctl, ring creation (seccomp,
//! memlock), the opcodes, multishot receive and the provided-buffer ring; the ring's setup
//! flags, best first.

use std::io;

use io_uring::{IoUring, Probe, opcode};

use super::super::config::ServerConfig;
use super::{GROUP, RING_ENTRIES, shard_buffers};

/// Checks that this kernel and process can run the io_uring backend with `config`: the
/// sysctl, ring creation (seccomp, memlock), the opcodes, multishot receive (Linux 6.0) and the
/// provided-buffer ring. `Err` says what is missing.
///
/// The probe runs on a thread of its own: when a ring is torn down, the kernel sends task work
/// (TWA_SIGNAL) to every thread that used it, which interrupts a blocking call with a timeout on
/// that thread with EINTR. The caller's thread must not see that.
pub fn probe(config: &ServerConfig) -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| probe_here(config))
            .join()
            .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
    })
}

fn probe_here(config: &ServerConfig) -> Result<(), String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            return Err("kernel.io_uring_disabled = 2".into());
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut version = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    if (major, minor) < (6, 0) {
        return Err(format!(
            "kernel {} has no multishot receive (Linux 6.0)",
            release.trim()
        ));
    }
    let ring = IoUring::new(8).map_err(|e| {
        format!("io_uring_setup failed: {e} (seccomp, kernel.io_uring_disabled or memlock)")
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("cannot probe io_uring opcodes: {e}"))?;
    // Every opcode the backend issues.
    for (name, code) in [
        ("ACCEPT", opcode::AcceptMulti::CODE),
        ("RECV", opcode::RecvMulti::CODE),
        ("SEND", opcode::Send::CODE),
        ("SENDMSG", opcode::SendMsg::CODE),
        ("READ", opcode::Read::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("POLL_ADD", opcode::PollAdd::CODE),
        ("FILES_UPDATE", opcode::FilesUpdate::CODE),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring lacks IORING_OP_{name}"));
        }
    }
    let bufs = shard_buffers(&ring, config).map_err(|e| {
        format!(
            "cannot register provided buffers of {} B: {e}",
            config.ring_buffer_size
        )
    })?;
    let _ = ring.submitter().unregister_buf_ring(GROUP);
    drop(bufs);
    Ok(())
}

/// The setup flags of a ring whose task work runs only when its thread enters the kernel
/// for it.
pub(super) const DEFER_TASKRUN: &str = "SINGLE_ISSUER+DEFER_TASKRUN";

/// The shard's ring, built on the shard's thread (SINGLE_ISSUER binds it to its creator).
/// Returns the ring and the setup flags it got.
pub(super) fn build_ring() -> io::Result<(IoUring, &'static str)> {
    let cq = RING_ENTRIES * 4;
    if let Ok(ring) = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq)
        .build(RING_ENTRIES)
    {
        return Ok((ring, DEFER_TASKRUN));
    }
    if let Ok(ring) = IoUring::builder()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(RING_ENTRIES)
    {
        return Ok((ring, "COOP_TASKRUN"));
    }
    Ok((
        IoUring::builder().setup_cqsize(cq).build(RING_ENTRIES)?,
        "no taskrun flags",
    ))
}
