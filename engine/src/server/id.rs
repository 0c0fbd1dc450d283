//! Connection ids: shard, slot and generation in one `u64`, so an id that outlives its
//! connection is detected when its slot is reused, never misdelivered.

use std::fmt;

/// Bits of the shard in an id: at most 1,024 shards.
pub const SHARD_BITS: u32 = 10;
/// Bits of the slot in an id: at most 16,777,216 connections per shard.
pub const SLOT_BITS: u32 = 24;
/// Bits of the generation in an id: a slot can be reused 2^30 - 1 times before an old id
/// could name a new connection again (hours, even at 100,000 new connections a second all
/// landing on one slot).
pub const GENERATION_BITS: u32 = 64 - SHARD_BITS - SLOT_BITS;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// Identifies one connection for its whole life.
///
/// Layout: `shard:10 | generation:30 | slot:24`. A slot's generation increases every time it
/// is reused, so a stale id (kept by the application after the connection closed) no longer
/// matches and operations on it fail with [`crate::server::SendError::Gone`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Builds an id. Bits above each field's width are dropped (the server keeps shards,
    /// slots and generations within them).
    pub fn new(shard: u16, slot: u32, generation: u32) -> Self {
        ConnId(
            (u64::from(shard) << (64 - SHARD_BITS))
                | (u64::from(generation & GENERATION_MASK) << SLOT_BITS)
                | u64::from(slot & SLOT_MASK),
        )
    }

    /// The generation that follows `generation` in a slot (wrapping within its 30 bits).
    pub fn next_generation(generation: u32) -> u32 {
        generation.wrapping_add(1) & GENERATION_MASK
    }

    /// The shard (thread) that owns the connection.
    pub fn shard(self) -> u16 {
        (self.0 >> (64 - SHARD_BITS)) as u16
    }

    /// The slab slot within the shard.
    pub fn slot(self) -> u32 {
        self.0 as u32 & SLOT_MASK
    }

    /// The slot's generation when the connection was opened.
    pub fn generation(self) -> u32 {
        (self.0 >> SLOT_BITS) as u32 & GENERATION_MASK
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
        let max_shard = (1u16 << SHARD_BITS) - 1;
        let id = ConnId::new(max_shard, SLOT_MASK, GENERATION_MASK);
        assert_eq!(
            (id.shard(), id.slot(), id.generation()),
            (max_shard, SLOT_MASK, GENERATION_MASK)
        );
        let id = ConnId::new(513, 0xbe_ef01, 0x2345_6789);
        assert_eq!(
            (id.shard(), id.slot(), id.generation()),
            (513, 0xbe_ef01, 0x2345_6789)
        );
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
        assert_ne!(ConnId::new(1, 5, 1), ConnId::new(1, 5, 2));
    }

    #[test]
    fn a_slot_reused_past_65536_times_still_tells_ids_apart() {
        // The 16-bit generation of old wrapped here: the 65,537th connection of a slot had
        // the id of its first.
        let mut generation = 1;
        let first = ConnId::new(0, 7, generation);
        for _ in 0..65_536 {
            generation = ConnId::next_generation(generation);
        }
        assert_ne!(ConnId::new(0, 7, generation), first);
        assert_eq!(ConnId::next_generation(GENERATION_MASK), 0);
    }
}
