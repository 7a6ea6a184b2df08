//! Streaming a message body from one side to the other through a fixed buffer, never
//! holding it whole. Chunked bodies pass through byte for byte; a small state machine only
//! finds where they end and refuses malformed chunk framing.

use std::io;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::head::Framing;
use crate::proxy::buf::ReadBuf;

#[derive(Debug)]
pub enum BodyError {
    /// Reading from the source failed.
    Read(io::Error),
    /// The source ended before the body did.
    Truncated,
    /// Writing to the destination failed.
    Write(io::Error),
    /// Malformed chunked framing.
    Framing(&'static str),
    /// More than the configured limit.
    TooLarge,
}

/// Finds the end of a chunked body (RFC 9112 §7.1) in bytes fed to it piece by piece.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    /// After the size: extensions up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
        }
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes of `input` that belong to the body; returns how many. Stops at the end
    /// of the body (the rest belongs to the next message).
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, BodyError> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let b = input[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BodyError::Framing("chunk size too long"));
                        }
                        self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                    }
                    b';' if self.digits > 0 => self.state = Ext,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err(BodyError::Framing("bad chunk size")),
                },
                Ext => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' | 0..=8 | 10..=31 | 127 => {
                        return Err(BodyError::Framing("bad chunk extension"))
                    }
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(BodyError::Framing("bare CR in chunk size line"));
                    }
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take = (self.size).min((input.len() - i) as u64) as usize;
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if b != b'\r' {
                        return Err(BodyError::Framing("chunk data longer than its size"));
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(BodyError::Framing("bare CR after chunk data"));
                    }
                    self.state = Size;
                    self.digits = 0;
                }
                TrailerStart => {
                    self.state = match b {
                        b'\r' => FinalLf,
                        b'\n' => return Err(BodyError::Framing("bare LF in trailer")),
                        _ => Trailer,
                    }
                }
                Trailer => {
                    if b == b'\r' {
                        self.state = TrailerLf;
                    } else if b == b'\n' {
                        return Err(BodyError::Framing("bare LF in trailer"));
                    }
                }
                TrailerLf | FinalLf => {
                    if b != b'\n' {
                        return Err(BodyError::Framing("bare CR in trailer"));
                    }
                    self.state = if self.state == FinalLf {
                        Done
                    } else {
                        TrailerStart
                    };
                }
                Done => unreachable!("loop condition"),
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Copies one body from `src` (bytes already in `buf` first) to `dst`. Returns the number of
/// body bytes moved. `limit` (0 = none) bounds the body size. Bytes after the body stay in
/// `buf` (a pipelined next message).
pub async fn copy_body<R, W>(
    framing: Framing,
    buf: &mut ReadBuf,
    src: &mut R,
    dst: &mut W,
    limit: u64,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut moved: u64 = 0;
    let mut remaining = match framing {
        Framing::None => return Ok(0),
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    if limit > 0 && matches!(framing, Framing::Length(n) if n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut chunked = ChunkedScanner::default();
    loop {
        if buf.is_empty() {
            let n = buf.fill(src).await.map_err(BodyError::Read)?;
            if n == 0 {
                return if framing == Framing::UntilClose {
                    Ok(moved)
                } else {
                    Err(BodyError::Truncated)
                };
            }
        }
        let take = match framing {
            Framing::Chunked => chunked.scan(buf.data())?,
            _ => remaining.min(buf.len() as u64) as usize,
        };
        dst.write_all(&buf.data()[..take])
            .await
            .map_err(BodyError::Write)?;
        buf.consume(take);
        moved += take as u64;
        remaining = remaining.saturating_sub(take as u64);
        if limit > 0 && moved > limit {
            return Err(BodyError::TooLarge);
        }
        let done = match framing {
            Framing::Chunked => chunked.is_done(),
            Framing::Length(_) => remaining == 0,
            _ => false,
        };
        if done {
            return Ok(moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), BodyError> {
        let mut s = ChunkedScanner::default();
        let n = s.scan(input)?;
        Ok((n, s.is_done()))
    }

    #[test]
    fn finds_end_of_chunked_body() {
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nTrailer: v\r\n\r\nNEXT";
        assert_eq!(scan_all(body).unwrap(), (body.len() - 4, true));
    }

    #[test]
    fn split_anywhere_agrees_with_whole() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        for cut in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let a = s.scan(&body[..cut]).unwrap();
            assert_eq!(a, cut);
            let b = s.scan(&body[cut..]).unwrap();
            assert_eq!(a + b, body.len());
            assert!(s.is_done());
        }
    }

    #[test]
    fn refuses_bad_chunk_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloX",
            b"\r\n",
            b"1ffffffffffffffff\r\n",
            b"0\r\n\n",
        ] {
            assert!(scan_all(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn copies_length_and_leaves_pipelined_bytes() {
        futures_lite::future::block_on(async {
            let mut src: &[u8] = b"helloGET";
            let mut buf = ReadBuf::new(4);
            let mut out = Vec::new();
            let n = copy_body(Framing::Length(5), &mut buf, &mut src, &mut out, 0)
                .await
                .unwrap();
            assert_eq!((n, &out[..]), (5, &b"hello"[..]));
        });
    }
}
