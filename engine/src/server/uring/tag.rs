//! Operation tags in `user_data`: the kind in the top byte, then what the kind needs.

use crate::server::id::{GENERATION_BITS, SLOT_BITS};

const SHIFT: u32 = 56;
/// The multishot accept.
pub const ACCEPT: u64 = 1 << SHIFT;
/// The read pending on the shard's eventfd.
pub const WAKE: u64 = 2 << SHIFT;
const RECV: u64 = 3;
const SEND: u64 = 4;
/// A cancellation request.
pub const CANCEL: u64 = 5 << SHIFT;
const FILES: u64 = 6;
/// The poll on the shard's epoll instance of parked connections.
pub const PARKED: u64 = 7 << SHIFT;
/// The poll on the shard's epoll instance of UDP sockets.
pub const UDP: u64 = 8 << SHIFT;

const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;
// The receive's slot and generation fit below the kind's byte.
const _: () = assert!(SLOT_BITS + GENERATION_BITS <= SHIFT);

/// A connection's receive (multishot or single-shot): its slot and generation, as in its
/// [`ConnId`](crate::server::ConnId).
pub fn recv(slot: u32, generation: u32) -> u64 {
    (RECV << SHIFT)
        | ((u64::from(generation) & GENERATION_MASK) << SLOT_BITS)
        | (u64::from(slot) & SLOT_MASK)
}

/// An update of the registered file table, by the key of the value it reads.
pub fn files(key: usize) -> u64 {
    (FILES << SHIFT) | (key as u64 & 0xFFFF_FFFF)
}

/// A send, by its key in the send slab.
pub fn send(key: usize) -> u64 {
    (SEND << SHIFT) | (key as u64 & 0xFFFF_FFFF)
}

/// What a completion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// [`ACCEPT`].
    Accept,
    /// [`WAKE`].
    Wake,
    /// [`recv`].
    Recv {
        /// Slot.
        slot: u32,
        /// Generation of the slot when the receive was armed.
        generation: u32,
    },
    /// [`send`].
    Send(usize),
    /// [`CANCEL`].
    Cancel,
    /// [`files`].
    Files(usize),
    /// [`PARKED`].
    Parked,
    /// [`UDP`].
    Udp,
}

/// Reads a tag back.
pub fn decode(data: u64) -> Option<Op> {
    match data >> SHIFT {
        1 => Some(Op::Accept),
        2 => Some(Op::Wake),
        RECV => Some(Op::Recv {
            slot: (data & SLOT_MASK) as u32,
            generation: ((data >> SLOT_BITS) & GENERATION_MASK) as u32,
        }),
        SEND => Some(Op::Send((data & 0xFFFF_FFFF) as usize)),
        5 => Some(Op::Cancel),
        FILES => Some(Op::Files((data & 0xFFFF_FFFF) as usize)),
        7 => Some(Op::Parked),
        8 => Some(Op::Udp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super as tag;

    #[test]
    fn tags_round_trip() {
        assert_eq!(
            tag::decode(tag::recv(0xAD_BEEF, 0x2BCD_EF01)),
            Some(tag::Op::Recv {
                slot: 0xAD_BEEF,
                generation: 0x2BCD_EF01
            })
        );
        assert_eq!(tag::decode(tag::send(12345)), Some(tag::Op::Send(12345)));
        assert_eq!(tag::decode(tag::ACCEPT), Some(tag::Op::Accept));
        assert_eq!(tag::decode(tag::WAKE), Some(tag::Op::Wake));
        assert_eq!(tag::decode(tag::CANCEL), Some(tag::Op::Cancel));
        assert_eq!(tag::decode(tag::files(77)), Some(tag::Op::Files(77)));
        assert_eq!(tag::decode(tag::PARKED), Some(tag::Op::Parked));
        assert_eq!(tag::decode(0), None);
    }
}
