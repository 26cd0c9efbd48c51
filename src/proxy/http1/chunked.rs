//! The one reader of chunked coding (RFC 9112 section 7.1): chunk-size
//! lines (extensions allowed), the CRLF after each chunk's data, and the
//! trailer section, stepped over whatever bytes are buffered.
//!
//! Why a stepper and not a decoder: its two users want different things
//! from the same rules. The client ([`super::client`]) hands chunk data on
//! as slices of its read buffer and needs the framing consumed as soon as
//! it is buffered (so the end of a body frees the connection at once); the
//! guard ([`super::guard`]) only skips over a request body hyper is reading
//! and never keeps a byte. So [`Chunk::step`] says what comes next in the
//! bytes given, and the caller takes or skips it.

/// Longest chunk-size line (extensions included).
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Largest trailer section (as large as an answer head may be).
pub const MAX_TRAILERS: usize = 64 * 1024;

/// Where a chunked-body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Waiting for a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines (skipped) up to the empty one; bytes seen so far.
    Trailers(usize),
}

/// What comes next in the bytes given to [`Chunk::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of framing were consumed: skip them, step again.
    Framing(usize),
    /// The next this many bytes are chunk data (as many as are there, up
    /// to the chunk's end): take or skip them, then call [`Chunk::took`].
    Data(usize),
    /// More bytes are needed.
    More,
    /// The body ended with this many bytes of framing (the last line of
    /// the trailer section).
    End(usize),
}

/// Why chunked framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk size")]
    Size,
    #[error("chunk size line longer than {MAX_CHUNK_LINE} bytes")]
    LineTooLong,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("trailer section larger than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
}

impl Chunk {
    /// Reads what comes next in `buf` (the bytes at the reader's position)
    /// and moves on past any framing it consumed.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, ChunkError> {
        match *self {
            Chunk::Data(left) => Ok(match buf.len() {
                0 => Step::More,
                // At most `left`, a u64, and at most buf.len(), a usize.
                n => Step::Data(left.min(n as u64) as usize),
            }),
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(ChunkError::DataEnd);
                }
                *self = Chunk::Size;
                Ok(Step::Framing(2))
            }
            Chunk::Size => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    return if buf.len() > MAX_CHUNK_LINE {
                        Err(ChunkError::LineTooLong)
                    } else {
                        Ok(Step::More)
                    };
                };
                let size = match httparse::parse_chunk_size(&buf[..=nl]) {
                    Ok(httparse::Status::Complete((_, size))) => size,
                    _ => return Err(ChunkError::Size),
                };
                *self = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
                Ok(Step::Framing(nl + 1))
            }
            Chunk::Trailers(seen) => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    return if seen + buf.len() > MAX_TRAILERS {
                        Err(ChunkError::TrailersTooLarge)
                    } else {
                        Ok(Step::More)
                    };
                };
                if nl == 0 || (nl == 1 && buf[0] == b'\r') {
                    return Ok(Step::End(nl + 1));
                }
                let seen = seen + nl + 1;
                if seen > MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLarge);
                }
                *self = Chunk::Trailers(seen);
                Ok(Step::Framing(nl + 1))
            }
        }
    }

    /// `n` bytes of the data [`Step::Data`] announced were taken.
    pub fn took(&mut self, n: usize) {
        if let Chunk::Data(left) = *self {
            *self = match left.saturating_sub(n as u64) {
                0 => Chunk::DataEnd,
                left => Chunk::Data(left),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps over `body` fed in pieces of `cut` bytes: the data, and
    /// whether the end was reached.
    fn decode(body: &[u8], cut: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let (mut chunk, mut data, mut pending) = (Chunk::Size, Vec::new(), Vec::new());
        for piece in body.chunks(cut.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                match chunk.step(&pending)? {
                    Step::Framing(n) => {
                        pending.drain(..n);
                    }
                    Step::Data(n) => {
                        data.extend(pending.drain(..n));
                        chunk.took(n);
                    }
                    Step::More => break,
                    Step::End(n) => {
                        pending.drain(..n);
                        assert!(pending.is_empty(), "nothing after the end");
                        return Ok((data, true));
                    }
                }
            }
        }
        Ok((data, false))
    }

    #[test]
    fn chunked_bodies_are_read_however_they_are_cut() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 1..body.len() + 1 {
            assert_eq!(decode(body, cut), Ok((b"hello world".to_vec(), true)));
        }
        assert_eq!(decode(b"0\r\n\r\n", 1), Ok((Vec::new(), true)));
        assert_eq!(decode(b"3\r\nabc\r\n", 2), Ok((b"abc".to_vec(), false)));
    }

    #[test]
    fn bad_framing_is_refused() {
        assert_eq!(decode(b"zz\r\n", 8), Err(ChunkError::Size));
        assert_eq!(decode(b"3\r\nabcX\r\n", 16), Err(ChunkError::DataEnd));
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert_eq!(decode(&long, long.len()), Err(ChunkError::LineTooLong));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 16 {
            trailers.extend_from_slice(b"X-T: 1\r\n");
        }
        for cut in [7, trailers.len()] {
            assert_eq!(
                decode(&trailers, cut),
                Err(ChunkError::TrailersTooLarge),
                "complete lines count too"
            );
        }
        let endless = [b"0\r\n".as_slice(), &vec![b'x'; MAX_TRAILERS + 1]].concat();
        assert_eq!(
            decode(&endless, endless.len()),
            Err(ChunkError::TrailersTooLarge)
        );
    }
}
