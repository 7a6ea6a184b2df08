//! Flood detection on the bytes a client sends to an HTTP/2 connection, before the `h2`
//! crate decodes them. It reads only the 9-byte frame headers (length, type, flags) to
//! count frames; decoding stays `h2`'s job. `h2` itself refuses CONTINUATION floods and
//! resets of streams it has not yet handed out; this guard adds the floods `h2` answers
//! without limit (PING, SETTINGS) and rapid reset of streams already accepted, so every
//! attack ends in a GOAWAY with a counter saying which one it was.
//!
//! Owns: per-connection frame counters and budgets.
//! Must not: buffer or alter the bytes (they pass through to `h2` untouched).

use std::time::Instant;

/// The client connection preface (RFC 9113 §3.4), skipped before frames begin.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_RST_STREAM: u8 = 0x3;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// CONTINUATION frames allowed in one header block: a 60 KiB header list fits in four
/// 16 KiB frames; `h2` allows max(header list / frame size × 1.25, 5), so this is its bound.
const MAX_CONTINUATIONS: u32 = 5;
/// Streams the client may reset before the reset ratio is judged (Envoy's
/// `premature_reset_min_stream_lifetime` check uses the same idea: a few resets are normal).
const RESETS_BEFORE_RATIO: u64 = 100;

/// Which flood ended a connection; also the suffix of its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    Ping,
    Settings,
    Continuation,
    RapidReset,
    /// Found by `h2` itself (ENHANCE_YOUR_CALM): too many empty or tiny DATA frames, or
    /// too many streams the client made `h2` reset.
    Frames,
}

impl Flood {
    pub const ALL: [Flood; 5] = [
        Flood::Ping,
        Flood::Settings,
        Flood::Continuation,
        Flood::RapidReset,
        Flood::Frames,
    ];

    /// The counter under the listener's `http.<prefix>.` scope.
    pub fn stat_name(self) -> &'static str {
        match self {
            Flood::Ping => "http2.ping_flood",
            Flood::Settings => "http2.settings_flood",
            Flood::Continuation => "http2.continuation_flood",
            Flood::RapidReset => "http2.rapid_reset",
            Flood::Frames => "http2.frame_flood",
        }
    }
}

/// A token bucket: `burst` frames at once, `per_sec` more each second.
struct Budget {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Budget {
    fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        Budget {
            tokens: burst.into(),
            burst: burst.into(),
            per_sec: per_sec.into(),
            at: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

pub struct FrameGuard {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: u32,
    /// CONTINUATION frames in the header block being received, None outside a block.
    continuations: Option<u32>,
    pings: Budget,
    settings: Budget,
    streams_opened: u64,
    resets: u64,
    tripped: Option<Flood>,
}

impl FrameGuard {
    /// The bytes scanned start with the client preface (always, on a server).
    pub fn new(now: Instant) -> Self {
        FrameGuard {
            preface_left: PREFACE.len(),
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            continuations: None,
            // A keep-alive ping every few seconds is normal; hundreds a second is not.
            pings: Budget::new(50, 10, now),
            settings: Budget::new(50, 10, now),
            streams_opened: 0,
            resets: 0,
            tripped: None,
        }
    }

    pub fn tripped(&self) -> Option<Flood> {
        self.tripped
    }

    /// RST_STREAM frames the client sent (tells a reset flood `h2` caught from others).
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Looks at the next bytes of the client's stream. Once it returns a flood, every later
    /// call returns the same one.
    pub fn scan(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Flood> {
        if let Some(f) = self.tripped {
            return Err(f);
        }
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = (self.payload_left as usize).min(bytes.len());
                self.payload_left -= take as u32;
                bytes = &bytes[take..];
                continue;
            }
            let take = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                if let Err(f) = self.on_frame(h[3], h[4], now) {
                    self.tripped = Some(f);
                    return Err(f);
                }
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, kind: u8, flags: u8, now: Instant) -> Result<(), Flood> {
        match kind {
            TYPE_HEADERS => {
                self.streams_opened += 1;
                self.continuations = (flags & FLAG_END_HEADERS == 0).then_some(0);
            }
            TYPE_CONTINUATION => {
                let n = self.continuations.map_or(1, |n| n + 1);
                if n > MAX_CONTINUATIONS {
                    return Err(Flood::Continuation);
                }
                self.continuations = (flags & FLAG_END_HEADERS == 0).then_some(n);
            }
            TYPE_RST_STREAM => {
                self.resets += 1;
                // More than half of the streams reset by the client, after enough of them
                // to judge: the rapid-reset attack (CVE-2023-44487), not a browser
                // cancelling the odd download.
                if self.resets >= RESETS_BEFORE_RATIO && self.resets * 2 > self.streams_opened {
                    return Err(Flood::RapidReset);
                }
            }
            TYPE_PING if flags & FLAG_ACK == 0 && !self.pings.take(now) => return Err(Flood::Ping),
            TYPE_SETTINGS if flags & FLAG_ACK == 0 && !self.settings.take(now) => {
                return Err(Flood::Settings)
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn feed_split(guard: &mut FrameGuard, bytes: &[u8], now: Instant) -> Result<(), Flood> {
        // One byte at a time: frame boundaries must not depend on how reads split.
        bytes.iter().try_for_each(|b| guard.scan(&[*b], now))
    }

    #[test]
    fn ordinary_traffic_passes_whatever_the_read_boundaries() {
        let now = Instant::now();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(TYPE_SETTINGS, 0, 0, &[0; 6]));
        for id in (1..400).step_by(2) {
            bytes.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | 0x1, id, &[0x82; 20]));
            bytes.extend(frame(0x0, 0, id, &[7; 100]));
        }
        bytes.extend(frame(TYPE_PING, 0, 0, &[0; 8]));
        let mut g = FrameGuard::new(now);
        assert_eq!(feed_split(&mut g, &bytes, now), Ok(()));
        let mut g = FrameGuard::new(now);
        assert_eq!(g.scan(&bytes, now), Ok(()));
    }

    #[test]
    fn ping_and_settings_floods_trip_but_a_slow_rate_does_not() {
        let now = Instant::now();
        let mut g = FrameGuard::new(now);
        g.scan(PREFACE, now).unwrap();
        let ping = frame(TYPE_PING, 0, 0, &[0; 8]);
        let trips = (0..1000).find(|_| g.scan(&ping, now).is_err());
        assert_eq!((trips, g.tripped()), (Some(50), Some(Flood::Ping)));

        let mut g = FrameGuard::new(now);
        g.scan(PREFACE, now).unwrap();
        let settings = frame(TYPE_SETTINGS, 0, 0, &[]);
        let ack = frame(TYPE_SETTINGS, FLAG_ACK, 0, &[]);
        for _ in 0..1000 {
            g.scan(&ack, now).unwrap();
        }
        for i in 0..1000u64 {
            // One a second for 1000 seconds: always within budget.
            let later = now + std::time::Duration::from_secs(i);
            g.scan(&settings, later).unwrap();
        }
        let at = now + std::time::Duration::from_secs(1000);
        assert!((0..100).any(|_| g.scan(&settings, at).is_err()));
        assert_eq!(g.tripped(), Some(Flood::Settings));
    }

    #[test]
    fn continuation_flood_trips_at_the_h2_bound() {
        let now = Instant::now();
        let mut g = FrameGuard::new(now);
        g.scan(PREFACE, now).unwrap();
        g.scan(&frame(TYPE_HEADERS, 0, 1, &[0; 10]), now).unwrap();
        let cont = frame(TYPE_CONTINUATION, 0, 1, &[0; 1]);
        for _ in 0..MAX_CONTINUATIONS {
            g.scan(&cont, now).unwrap();
        }
        assert_eq!(g.scan(&cont, now), Err(Flood::Continuation));
        // A block that ends in time resets the count.
        let mut g = FrameGuard::new(now);
        g.scan(PREFACE, now).unwrap();
        for id in 0..10 {
            g.scan(&frame(TYPE_HEADERS, 0, id * 2 + 1, &[0; 10]), now)
                .unwrap();
            g.scan(&cont, now).unwrap();
            g.scan(
                &frame(TYPE_CONTINUATION, FLAG_END_HEADERS, id * 2 + 1, &[]),
                now,
            )
            .unwrap();
        }
    }

    #[test]
    fn rapid_reset_trips_but_occasional_cancels_do_not() {
        let now = Instant::now();
        let mut g = FrameGuard::new(now);
        g.scan(PREFACE, now).unwrap();
        let mut tripped_at = None;
        for id in 0..1000u32 {
            let s = id * 2 + 1;
            let mut b = frame(TYPE_HEADERS, FLAG_END_HEADERS, s, &[0x82]);
            b.extend(frame(TYPE_RST_STREAM, 0, s, &8u32.to_be_bytes()));
            if g.scan(&b, now).is_err() {
                tripped_at = Some(id);
                break;
            }
        }
        assert_eq!(tripped_at, Some(RESETS_BEFORE_RATIO as u32 - 1));

        let mut g = FrameGuard::new(now);
        g.scan(PREFACE, now).unwrap();
        for id in 0..1000u32 {
            let s = id * 2 + 1;
            g.scan(&frame(TYPE_HEADERS, FLAG_END_HEADERS, s, &[0x82]), now)
                .unwrap();
            if id % 4 == 0 {
                g.scan(&frame(TYPE_RST_STREAM, 0, s, &8u32.to_be_bytes()), now)
                    .unwrap();
            }
        }
    }
}
