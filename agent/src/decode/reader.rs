//! The bounded reader every decoder layer reads packet bytes through.
//!
//! Shaped like rustls' `msgs/codec.rs` `Reader`: each read either returns the bytes asked for or
//! `None`, and never indexes out of bounds, so a parser built on it cannot panic on short input.
//! Multi-byte integers are big-endian (network order).

/// A cursor over borrowed bytes whose reads fail with `None` instead of panicking.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    cursor: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    #[inline]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, cursor: 0 }
    }

    /// The next `n` bytes, or `None` (and nothing consumed) if fewer are left.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.cursor.checked_add(n)?;
        let bytes = self.buf.get(self.cursor..end)?;
        self.cursor = end;
        Some(bytes)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A reader over the next `n` bytes, which this reader skips.
    #[inline]
    pub(crate) fn sub(&mut self, n: usize) -> Option<Reader<'a>> {
        self.take(n).map(Reader::new)
    }

    /// Skips `n` bytes.
    #[inline]
    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let [b] = self.array::<1>()?;
        Some(b)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    /// A 24-bit integer, as TLS handshake lengths are.
    #[inline]
    pub(crate) fn u24(&mut self) -> Option<u32> {
        let [a, b, c] = self.array()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// A reader over a block whose length is the next `u8`.
    #[inline]
    pub(crate) fn sub_u8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.sub(usize::from(n))
    }

    /// A reader over a block whose length is the next `u16`.
    #[inline]
    pub(crate) fn sub_u16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.sub(usize::from(n))
    }

    /// Everything not yet read; the reader is then empty.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.peek_rest();
        self.cursor = self.buf.len();
        rest
    }

    /// Everything not yet read, without consuming it.
    #[inline]
    pub(crate) fn peek_rest(&self) -> &'a [u8] {
        self.buf.get(self.cursor..).unwrap_or_default()
    }

    /// How many bytes are left.
    #[inline]
    pub(crate) fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.cursor)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.left() == 0
    }

    /// How many bytes have been read.
    #[inline]
    pub(crate) fn used(&self) -> usize {
        self.cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_integers_in_order() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0203));
        assert_eq!(r.u24(), Some(0x04_0506));
        assert_eq!(r.u32(), Some(0x0708_090a));
        assert!(r.is_empty());
        assert_eq!(r.used(), 10);
    }

    #[test]
    fn short_reads_fail_without_consuming() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.left(), 3);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.take(3), Some(&[1u8, 2, 3][..]));
        assert_eq!(r.u8(), None);
        assert_eq!(r.rest(), &[] as &[u8]);
    }

    #[test]
    fn sub_readers_are_bounded_by_their_length_prefix() {
        let mut r = Reader::new(&[2, 0xaa, 0xbb, 0xcc]);
        let mut sub = r.sub_u8().unwrap();
        assert_eq!(sub.u16(), Some(0xaabb));
        assert_eq!(sub.u8(), None);
        assert_eq!(r.rest(), &[0xcc]);

        let mut r = Reader::new(&[0, 5, 1]);
        assert!(r.sub_u16().is_none());
    }
}
