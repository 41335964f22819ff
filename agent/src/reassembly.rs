//! TCP stream reassembly for payload inspection, one direction at a time, bounded.
//!
//! A [`HalfStream`] puts a direction's segments back in sequence order up to `depth` bytes (the
//! first 64 KiB by default: where requests, uploads and the start of responses are; Suricata's
//! `stream.reassembly.depth` plays the same role). What it keeps in memory is only the part not
//! yet inspected, plus a short tail of the part already inspected (`overlap`) so a pattern that
//! straddles two inspections is still seen whole.
//!
//! Retransmitted bytes keep the *first* copy seen (a later, different copy is an evasion attempt
//! or a broken stack; either way the receiver most likely kept the first). Segments that arrive
//! ahead of a hole wait, up to `max_out_of_order_bytes`; when a hole does not fill by then (or
//! at the end), it is given up, counted in [`HalfStream::gaps`], and reassembly continues after
//! it. Sequence numbers wrap (RFC 793 arithmetic modulo 2^32).

/// Bounds of one direction's reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the direction reassembled and inspected, from its start.
    pub depth: usize,
    /// Bytes held ahead of a hole before the hole is given up.
    pub max_out_of_order_bytes: usize,
    /// Bytes already inspected kept in front of the next inspection.
    pub overlap: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: 64 * 1024,
            max_out_of_order_bytes: 32 * 1024,
            overlap: 1024,
        }
    }
}

/// One direction of a TCP connection.
#[derive(Debug, Default, Clone)]
pub struct HalfStream {
    /// Next sequence number expected in order; `None` until the SYN or the first data segment.
    next_seq: Option<u32>,
    /// Bytes placed in order since the start (including gaps' successors), at most `depth`.
    accepted: usize,
    /// Bytes not yet handed out for inspection, preceded by `carried` bytes that were.
    pending: Vec<u8>,
    carried: usize,
    /// Stream offset of `pending[0]`.
    pending_offset: usize,
    /// Segments ahead of a hole: (sequence number, bytes).
    ahead: Vec<(u32, Vec<u8>)>,
    ahead_bytes: usize,
    /// Holes given up.
    gaps: u32,
}

/// `a - b` in sequence space, as a signed distance.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl HalfStream {
    /// A SYN from this direction: data starts at `seq + 1`.
    pub fn on_syn(&mut self, seq: u32) {
        if self.accepted == 0 && self.pending.is_empty() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// A data segment. Returns the number of bytes that became available in order.
    pub fn on_data(&mut self, seq: u32, data: &[u8], limits: &Limits) -> usize {
        if data.is_empty() || self.is_complete(limits) {
            return 0;
        }
        let next = *self.next_seq.get_or_insert(seq);
        let off = seq_diff(seq, next);
        if off > 0 && off as usize >= limits.depth.saturating_sub(self.accepted) {
            // Beyond the inspection depth: nothing we will ever inspect.
            return 0;
        }
        let mut added = 0;
        if off > 0 && self.ahead_bytes + data.len() > limits.max_out_of_order_bytes {
            // Too much held behind holes: give them up, earliest first, until this segment
            // connects or fits.
            loop {
                if self.ahead.is_empty() {
                    self.gaps += 1;
                    self.next_seq = Some(seq);
                    break;
                }
                self.skip_hole();
                added += self.drain_ahead(limits);
                let connects = self.next_seq.is_some_and(|n| seq_diff(seq, n) <= 0);
                if connects || self.ahead_bytes + data.len() <= limits.max_out_of_order_bytes {
                    break;
                }
            }
        }
        let connects = self.next_seq.is_some_and(|n| seq_diff(seq, n) <= 0);
        if connects {
            added += self.append_at(seq, data, limits);
            added += self.drain_ahead(limits);
        } else if !self.is_complete(limits) {
            self.ahead_bytes += data.len();
            self.ahead.push((seq, data.to_vec()));
        }
        added
    }

    /// Appends the part of `data` (starting at `seq`) that is new in order; retransmitted bytes
    /// keep their first copy.
    fn append_at(&mut self, seq: u32, data: &[u8], limits: &Limits) -> usize {
        let Some(next) = self.next_seq else {
            return 0;
        };
        let skip = usize::try_from(-seq_diff(seq, next)).unwrap_or(0);
        if skip >= data.len() {
            return 0;
        }
        let fresh = &data[skip..];
        let room = limits.depth.saturating_sub(self.accepted);
        let take = fresh.len().min(room);
        self.pending.extend_from_slice(&fresh[..take]);
        self.accepted += take;
        self.next_seq = Some(next.wrapping_add(fresh.len() as u32));
        take
    }

    /// Moves held segments that now connect into place.
    fn drain_ahead(&mut self, limits: &Limits) -> usize {
        let mut added = 0;
        while let Some(next) = self.next_seq {
            let Some(i) = self.ahead.iter().position(|(s, _)| seq_diff(*s, next) <= 0) else {
                break;
            };
            let (s, bytes) = self.ahead.swap_remove(i);
            self.ahead_bytes -= bytes.len();
            added += self.append_at(s, &bytes, limits);
        }
        added
    }

    /// Gives up the hole before the earliest held segment: counts a gap and continues there.
    fn skip_hole(&mut self) {
        let Some(next) = self.next_seq else {
            return;
        };
        if let Some(&(earliest, _)) = self.ahead.iter().min_by_key(|(s, _)| seq_diff(*s, next)) {
            self.gaps += 1;
            self.next_seq = Some(earliest);
        }
    }

    /// At the end of the stream (or before a final inspection): gives up every remaining hole so
    /// the held segments become inspectable. Returns bytes that became available.
    pub fn close_holes(&mut self, limits: &Limits) -> usize {
        let mut added = 0;
        while !self.ahead.is_empty() {
            let held = self.ahead.len();
            self.skip_hole();
            added += self.drain_ahead(limits);
            if self.ahead.len() == held {
                // No progress (cannot happen while a segment is held; belt and braces).
                self.ahead_bytes = 0;
                self.ahead.clear();
            }
        }
        added
    }

    /// True once `depth` bytes have been placed: nothing more will be inspected.
    pub fn is_complete(&self, limits: &Limits) -> bool {
        self.accepted >= limits.depth
    }

    /// Bytes placed in order but not yet inspected.
    pub fn uninspected(&self) -> usize {
        self.pending.len() - self.carried
    }

    /// Bytes held in memory (pending, carried and out of order).
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.ahead_bytes
    }

    /// Holes given up so far.
    pub fn gaps(&self) -> u32 {
        self.gaps
    }

    /// Hands out the bytes to inspect: `(stream offset of data[0], carried, data)` where the first
    /// `carried` bytes were inspected before (overlap). Keeps the last `overlap` bytes for the
    /// next inspection. `None` when nothing new is pending.
    pub fn take(&mut self, limits: &Limits) -> Option<Inspection> {
        if self.uninspected() == 0 {
            return None;
        }
        let keep = limits.overlap.min(self.pending.len());
        let tail = self.pending[self.pending.len() - keep..].to_vec();
        let data = std::mem::replace(&mut self.pending, tail);
        let inspection = Inspection {
            offset: self.pending_offset,
            carried: self.carried,
            data,
        };
        self.pending_offset += inspection.data.len() - keep;
        self.carried = keep;
        Some(inspection)
    }

    /// Frees everything held (the stream is done).
    pub fn release(&mut self) {
        self.pending = Vec::new();
        self.ahead = Vec::new();
        self.ahead_bytes = 0;
        self.carried = 0;
    }
}

/// Bytes handed out for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Offset of `data[0]` in the direction's byte stream.
    pub offset: usize,
    /// Leading bytes of `data` inspected before (the overlap).
    pub carried: usize,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Entry point for the `stream_reassembly` fuzz target (`fuzz/`).
pub mod fuzzing {
    use super::*;

    /// Reads `data` as segments — `[op, seq (4 bytes BE), len, len bytes…]` — and feeds them to a
    /// [`HalfStream`] with small limits, taking inspections and closing holes as `op` says, and
    /// checks the invariants: memory stays bounded, inspections never exceed the depth, offsets
    /// only move forward.
    pub fn stream_reassembly(data: &[u8]) {
        let limits = Limits {
            depth: 2048,
            max_out_of_order_bytes: 512,
            overlap: 64,
        };
        let mut h = HalfStream::default();
        let mut rest = data;
        let mut last_offset = 0;
        let mut inspected_new = 0usize;
        while let [op, a, b, c, d, len, tail @ ..] = rest {
            let seq = u32::from_be_bytes([*a, *b, *c, *d]);
            let n = usize::from(*len).min(tail.len());
            let (payload, next) = tail.split_at(n);
            rest = next;
            match op % 4 {
                0 => h.on_syn(seq),
                1 => {
                    h.close_holes(&limits);
                }
                _ => {
                    h.on_data(seq, payload, &limits);
                }
            }
            assert!(h.buffered() <= limits.depth + limits.max_out_of_order_bytes + 255);
            if op & 0x80 != 0 {
                if let Some(i) = h.take(&limits) {
                    assert!(i.offset >= last_offset);
                    assert!(i.carried <= limits.overlap && i.carried <= i.data.len());
                    inspected_new += i.data.len() - i.carried;
                    last_offset = i.offset;
                }
            }
            assert!(inspected_new <= limits.depth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(depth: usize) -> Limits {
        Limits {
            depth,
            max_out_of_order_bytes: 64,
            overlap: 4,
        }
    }

    fn all(h: &mut HalfStream, l: &Limits) -> Vec<u8> {
        h.take(l).map(|i| i.data).unwrap_or_default()
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted_segments() {
        let l = limits(1000);
        let mut h = HalfStream::default();
        h.on_syn(99);
        assert_eq!(h.on_data(100, b"GET ", &l), 4);
        // Ahead of a hole: held.
        assert_eq!(h.on_data(108, b"HTTP", &l), 0);
        // Fills the hole: both land.
        assert_eq!(h.on_data(104, b"/ab ", &l), 8);
        // A retransmission overlapping old and new bytes keeps the first copy.
        assert_eq!(h.on_data(110, b"XX/1", &l), 2);
        assert_eq!(all(&mut h, &l), b"GET /ab HTTP/1");
        assert_eq!(h.gaps(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let l = limits(1000);
        let mut h = HalfStream::default();
        h.on_syn(u32::MAX - 2);
        h.on_data(u32::MAX - 1, b"ab", &l);
        h.on_data(0, b"cd", &l);
        assert_eq!(all(&mut h, &l), b"abcd");
    }

    #[test]
    fn depth_bounds_what_is_kept_and_overlap_carries_a_tail() {
        let l = limits(10);
        let mut h = HalfStream::default();
        h.on_data(1, b"0123456", &l);
        let first = h.take(&l).unwrap();
        assert_eq!(
            (first.offset, first.carried, &first.data[..]),
            (0, 0, &b"0123456"[..])
        );
        h.on_data(8, b"789abc", &l);
        assert!(h.is_complete(&l));
        let second = h.take(&l).unwrap();
        // The last 4 inspected bytes come again in front; depth stops at 10 bytes.
        assert_eq!(
            (second.offset, second.carried, &second.data[..]),
            (3, 4, &b"3456789"[..])
        );
        assert_eq!(h.on_data(14, b"more", &l), 0);
        assert!(h.take(&l).is_none());
    }

    #[test]
    fn a_hole_that_never_fills_is_given_up_and_counted() {
        let l = limits(1000);
        let mut h = HalfStream::default();
        h.on_data(1, b"abc", &l);
        h.on_data(10, b"xyz", &l);
        assert_eq!(h.uninspected(), 3);
        assert_eq!(h.close_holes(&l), 3);
        assert_eq!(h.gaps(), 1);
        assert_eq!(all(&mut h, &l), b"abcxyz");
    }

    #[test]
    fn too_much_held_gives_the_hole_up_early() {
        let l = limits(1000);
        let mut h = HalfStream::default();
        h.on_data(1, b"a", &l);
        h.on_data(100, &[b'x'; 60], &l);
        assert_eq!(h.buffered(), 61);
        // Another 10 bytes would exceed 64 held: the hole at 2..100 is given up.
        h.on_data(160, &[b'y'; 10], &l);
        assert_eq!(h.gaps(), 1);
        assert_eq!(h.uninspected(), 71);
    }

    #[test]
    fn fuzz_entry_point_holds_on_random_input() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..2_000 {
            let data: Vec<u8> = (0..rng.usize(0..600)).map(|_| rng.u8(..)).collect();
            fuzzing::stream_reassembly(&data);
        }
    }

    #[test]
    fn arbitrary_segments_never_panic_and_stay_bounded() {
        let l = limits(4096);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut h = HalfStream::default();
            for _ in 0..200 {
                let seq = rng.u32(..);
                let len = rng.usize(0..300);
                h.on_data(seq, &vec![1u8; len], &l);
                if rng.u8(..) < 20 {
                    h.close_holes(&l);
                    let _ = h.take(&l);
                }
                assert!(h.buffered() <= l.depth + l.max_out_of_order_bytes + 300);
            }
        }
    }
}
