//! Connection ids: shard, slot and generation in one `u64`, so an id that outlives its
//! connection is detected when its slot is reused, never misdelivered.

use std::fmt;

/// Identifies one connection for its whole life.
///
/// Layout: `shard:16 | generation:16 | slot:32`. A slot's generation increases every time it is
/// reused, so a stale id (kept by the application after the connection closed) no longer
/// matches and operations on it fail with [`crate::server::SendError::Gone`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Builds an id.
    pub fn new(shard: u16, slot: u32, generation: u16) -> Self {
        ConnId((u64::from(shard) << 48) | (u64::from(generation) << 32) | u64::from(slot))
    }

    /// The shard (thread) that owns the connection.
    pub fn shard(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The slab slot within the shard.
    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    /// The slot's generation when the connection was opened.
    pub fn generation(self) -> u16 {
        (self.0 >> 32) as u16
    }

    /// The packed form, for maps, logs and timer tokens.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Back from [`ConnId::as_u64`]. Any value is a well-formed id; one that names no
    /// connection is refused by every call that takes it ([`SendError::Gone`](super::SendError)).
    pub fn from_u64(packed: u64) -> Self {
        ConnId(packed)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnId({}:{}#{})",
            self.shard(),
            self.slot(),
            self.generation()
        )
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let id = ConnId::new(513, 0xdead_beef, 0xfffe);
        assert_eq!(
            (id.shard(), id.slot(), id.generation()),
            (513, 0xdead_beef, 0xfffe)
        );
        assert_ne!(ConnId::new(1, 5, 1), ConnId::new(1, 5, 2));
    }
}
