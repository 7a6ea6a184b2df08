//! Removing HTTP/1.1 chunked framing from a response body on its way into HTTP/2 DATA
//! frames (HTTP/2 frames the body itself). The body was already checked by the HTTP/1.1
//! exchange (`body::ChunkedScanner`), so this only follows the framing; trailers are dropped.
//!
//! Owns: the decoder state across writes. Must not: allocate (it hands out ranges).

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Extensions after the size, up to LF.
    SizeLine,
    Data,
    /// CRLF after chunk data.
    DataEnd,
    /// Start of a trailer line or of the final empty line.
    LineStart,
    /// Inside a trailer line.
    Trailer,
    /// The final empty line's LF.
    FinalLf,
    Done,
}

#[derive(Debug)]
pub struct Dechunk {
    state: State,
    size: u64,
}

impl Default for Dechunk {
    fn default() -> Self {
        Dechunk {
            state: State::Size,
            size: 0,
        }
    }
}

impl Dechunk {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next run of body data in `input`: returns (bytes of `input` used, data range
    /// within them). Call again with the rest until it uses nothing.
    pub fn next(&mut self, input: &[u8]) -> (usize, Option<Range<usize>>) {
        use State::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let b = input[i];
            match self.state {
                Size => match (b as char).to_digit(16) {
                    Some(d) => self.size = self.size.saturating_mul(16).saturating_add(d as u64),
                    None if b == b'\n' => self.state = self.after_size(),
                    None => self.state = SizeLine,
                },
                SizeLine if b == b'\n' => self.state = self.after_size(),
                SizeLine => {}
                Data => {
                    let take = self.size.min((input.len() - i) as u64) as usize;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = DataEnd;
                    }
                    return (i + take, Some(i..i + take));
                }
                DataEnd if b == b'\n' => self.state = Size,
                DataEnd => {}
                LineStart if b == b'\n' => self.state = Done,
                LineStart if b == b'\r' => self.state = FinalLf,
                LineStart => self.state = Trailer,
                Trailer if b == b'\n' => self.state = LineStart,
                Trailer => {}
                FinalLf => self.state = Done,
                Done => unreachable!("loop condition"),
            }
            i += 1;
        }
        (i, None)
    }

    /// Decodes all of `input`, handing each run of body data to `out`.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) {
        while !input.is_empty() {
            let (used, data) = self.next(input);
            if let Some(r) = data {
                out(&input[r]);
            }
            input = &input[used..];
            if used == 0 {
                break;
            }
        }
    }

    fn after_size(&mut self) -> State {
        if self.size == 0 {
            State::LineStart
        } else {
            State::Data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], split: usize) -> (Vec<u8>, bool) {
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        for piece in input.chunks(split) {
            d.feed(piece, |data| out.extend_from_slice(data));
        }
        (out, d.is_done())
    }

    #[test]
    fn decodes_whatever_the_write_boundaries() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: y\r\n\r\n";
        for split in 1..body.len() {
            assert_eq!(
                decode(body, split),
                (b"hello world".to_vec(), true),
                "{split}"
            );
        }
        assert_eq!(decode(b"0\r\n\r\n", 1), (Vec::new(), true));
        assert_eq!(decode(b"3\r\nabc\r\n", 2), (b"abc".to_vec(), false));
    }
}
