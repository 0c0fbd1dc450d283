//! permessage-deflate (RFC 7692): the negotiation, and the compression of whole messages.
//!
//! The stance of this implementation keeps compression free of per-connection memory: neither
//! side keeps a compression context between messages. A server always answers
//! `server_no_context_takeover` (its messages can then be compressed once and shared by every
//! subscriber) and `client_no_context_takeover` (so it inflates each message on its own: the
//! inflate state lives only while one message is decoded). A client offers both and refuses an
//! answer without `server_no_context_takeover`. Compressors are kept per thread, one per window
//! size, and reset for every message. Every whole message is compressed, as uWebSockets does
//! (the Autobahn runner used here, kosoku 0.1.0, errs on an uncompressed text echo in its
//! compression cases, though RFC 7692 allows one).
//!
//! Inflating is bounded: output grows in steps of [`INFLATE_STEP`] and stops one byte past the
//! message limit, so a decompression bomb is refused (1009) before it is inflated past it.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// Output growth per inflate step, bytes.
pub const INFLATE_STEP: usize = 16 << 10;

/// The tail every sync flush ends with; stripped from each message (section 7.2.1) and put
/// back before inflating (section 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What was agreed for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    /// log2 of the window this side compresses with (9 to 15).
    pub window_bits: u8,
}

/// A server's acceptance of one offer: the parameters and the response header's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// What this server will do.
    pub deflate: Deflate,
    /// The value of the `Sec-WebSocket-Extensions` response header.
    pub response: String,
}

/// The server side of the negotiation (section 7.1): the first well-formed
/// `permessage-deflate` offer among the `Sec-WebSocket-Extensions` header values is accepted;
/// offers with unknown, duplicate or malformed parameters are declined (and the next one
/// tried). `None`: no acceptable offer, no compression.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Negotiated> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_outside_quotes(text, ',') {
            if let Some(n) = accept(offer) {
                return Some(n);
            }
        }
    }
    None
}

fn accept(offer: &str) -> Option<Negotiated> {
    let mut parts = split_outside_quotes(offer, ';');
    if !parts.next()?.trim().eq_ignore_ascii_case(NAME) {
        return None;
    }
    let (mut server_nct, mut client_nct, mut server_bits, mut client_bits) =
        (false, false, None, None);
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            //= https://www.rfc-editor.org/rfc/rfc7692#section-7.1.1.1
            //# A server MUST decline an extension negotiation offer for this extension if
            //# any of the following conditions are met: [...] The negotiation offer
            //# contains an extension parameter with an invalid value. [...] multiple
            //# extension parameters with the same name.
            "server_no_context_takeover" if value.is_none() && !server_nct => server_nct = true,
            "client_no_context_takeover" if value.is_none() && !client_nct => client_nct = true,
            "server_max_window_bits" if server_bits.is_none() => {
                server_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" if client_bits.is_none() => {
                client_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
            }
            _ => return None,
        }
    }
    // zlib's deflate has no 256-byte window: asked for 8 bits, it compresses with 9, as every
    // zlib-based peer does (and their decoders accept).
    let window_bits = server_bits.unwrap_or(15).max(9);
    let mut response = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(Negotiated {
        deflate: Deflate { window_bits },
        response,
    })
}

fn window_bits(value: &str) -> Option<u8> {
    //= https://www.rfc-editor.org/rfc/rfc7692#section-7.1.2.1
    //# The value MUST conform to the ABNF below. [...] 1*DIGIT [...] range 8 to 15
    //# inclusive [...] without leading zeroes.
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

fn split_outside_quotes(text: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut done = false;
    let mut chars = text.char_indices();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        for (i, c) in chars.by_ref() {
            if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                let part = &text[start..i];
                start = i + c.len_utf8();
                return Some(part);
            }
        }
        done = true;
        Some(&text[start..])
    })
}

/// The client's offer: no context on either side.
pub fn client_offer() -> String {
    format!("{NAME}; server_no_context_takeover; client_no_context_takeover")
}

/// A server's `Sec-WebSocket-Extensions` answer the client did not offer or cannot follow: the
/// client must fail the connection (section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAnswer;

/// The client side: reads the server's response. `Ok(None)` when it accepted no extension.
pub fn client_accepts(value: Option<&[u8]>) -> Result<Option<Deflate>, BadAnswer> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value).map_err(|_| BadAnswer)?;
    let mut parts = split_outside_quotes(text, ';');
    let name = parts.next().ok_or(BadAnswer)?.trim();
    if !name.eq_ignore_ascii_case(NAME) || text.contains(',') {
        return Err(BadAnswer);
    }
    let mut server_nct = false;
    let mut bits = 15;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()).ok_or(BadAnswer)?)),
            None => (param.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => server_nct = true,
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => {
                window_bits(v).ok_or(BadAnswer)?;
            }
            ("client_max_window_bits", Some(v)) => bits = window_bits(v).ok_or(BadAnswer)?.max(9),
            _ => return Err(BadAnswer),
        }
    }
    // A server keeping its context would need an inflater per connection for good.
    if !server_nct {
        return Err(BadAnswer);
    }
    Ok(Some(Deflate { window_bits: bits }))
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit (1009).
    TooLarge,
    /// Not a valid DEFLATE stream (1007).
    Invalid,
}

/// Inflates one message's compressed payload (all its frames' payloads, concatenated),
/// refusing it once the output would pass `max` bytes.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    // A raw stream (no zlib header) with the largest window: it reads any sender's.
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut out = Vec::new();
    for input in [compressed, &TAIL[..]] {
        let start = d.total_in();
        loop {
            let used = (d.total_in() - start) as usize;
            let Some(rest) = input.get(used..) else {
                return Err(InflateError::Invalid);
            };
            if out.len() == out.capacity() {
                // One byte past the limit is enough to know it is too large.
                let room = (max + 1).saturating_sub(out.len()).min(INFLATE_STEP);
                if room == 0 {
                    return Err(InflateError::TooLarge);
                }
                out.reserve_exact(room);
            }
            let before = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            if out.len() > max {
                return Err(InflateError::TooLarge);
            }
            let consumed_all = (d.total_in() - start) as usize == input.len();
            let progress = (d.total_in(), d.total_out()) != before;
            if status == Status::StreamEnd
                || (consumed_all && out.len() < out.capacity())
                || !progress && out.len() < out.capacity()
            {
                break;
            }
        }
    }
    Ok(out)
}

thread_local! {
    /// This thread's compressors, by window bits (9 to 15), made on first use.
    static COMPRESSORS: RefCell<[Option<Box<Compress>>; 7]> = const {
        RefCell::new([None, None, None, None, None, None, None])
    };
}

/// Appends `data` compressed as one message's payload (no context: the compressor is reset
/// first; the sync flush's tail stripped) with a window of `window_bits` (9 to 15).
pub fn compress(data: &[u8], window_bits: u8, out: &mut Vec<u8>) {
    let bits = window_bits.clamp(9, 15);
    COMPRESSORS.with(|all| {
        let mut all = all.borrow_mut();
        let c = all[usize::from(bits - 9)].get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::fast(),
                false,
                bits,
            ))
        });
        c.reset();
        let start = out.len();
        loop {
            let used = c.total_in() as usize;
            out.reserve(data.len().saturating_sub(used) / 2 + 64);
            let before = c.total_out();
            // Only fails on a corrupted stream state, which a reset compressor cannot have;
            // the message is then sent as far as it went and the peer fails it.
            if c.compress_vec(&data[used.min(data.len())..], out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            let done = c.total_in() as usize == data.len() && out.len() < out.capacity();
            if done || (c.total_out() == before && c.total_in() as usize == data.len()) {
                break;
            }
        }
        //= https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1
        //# Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end.
        if out.len() >= start + 4 && out[out.len() - 4..] == TAIL {
            out.truncate(out.len() - 4);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(v: &str) -> Option<Negotiated> {
        negotiate([v.as_bytes()])
    }

    #[test]
    fn negotiation_accepts_the_first_good_offer() {
        let n = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(n.deflate, Deflate { window_bits: 15 });
        assert_eq!(
            n.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let n = offer("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(n.deflate.window_bits, 10);
        assert!(n.response.ends_with("; server_max_window_bits=10"));
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=8")
                .unwrap()
                .deflate
                .window_bits,
            9
        );
        // Declined: unknown, duplicate, malformed; then the next offer is taken.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let n = offer("permessage-deflate; foo, permessage-deflate; client_max_window_bits=\"10\"")
            .unwrap();
        assert_eq!(n.deflate.window_bits, 15);
        assert!(negotiate([&b"\xff"[..], b"permessage-deflate"]).is_some());
    }

    #[test]
    fn the_client_reads_the_answer() {
        let ok = |v: &str| client_accepts(Some(v.as_bytes()));
        assert_eq!(client_accepts(None), Ok(None));
        assert_eq!(
            ok("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            Ok(Some(Deflate { window_bits: 15 }))
        );
        assert_eq!(
            ok("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
            Ok(Some(Deflate { window_bits: 10 }))
        );
        assert!(
            ok("permessage-deflate").is_err(),
            "the server keeps context"
        );
        assert!(ok("permessage-deflate; server_no_context_takeover; x").is_err());
        assert!(ok("other").is_err());
    }

    #[test]
    fn messages_round_trip_at_every_window() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("message {} ", i % 1000).into_bytes())
            .collect();
        for bits in 9..=15 {
            for data in [&b""[..], b"a", &text[..1000], &text] {
                let mut z = Vec::new();
                compress(data, bits, &mut z);
                assert!(!z.ends_with(&TAIL));
                assert_eq!(inflate(&z, data.len()).unwrap(), data, "{bits}");
            }
        }
        let mut z = Vec::new();
        compress(&text, 15, &mut z);
        assert!(z.len() < text.len() / 10, "{} of {}", z.len(), text.len());
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let zeros = vec![0u8; 50 << 20];
        let mut z = Vec::new();
        compress(&zeros, 15, &mut z);
        assert!(z.len() < 1 << 20, "{}", z.len()); // 50 MiB in under 1 MiB
        assert_eq!(inflate(&z, 1 << 20), Err(InflateError::TooLarge));
        assert_eq!(inflate(&z, zeros.len()).unwrap().len(), zeros.len());
        assert_eq!(inflate(b"\xff\xff\xff", 100), Err(InflateError::Invalid));
    }
}
