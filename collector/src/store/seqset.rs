//! The set of sequence numbers stored for one agent on one day, as sorted inclusive ranges.
//! Agents send in sequence order, so the set is nearly always one range per spool gap: lookups
//! and inserts are a binary search, the common insert extends the last range.

/// Sorted, non-overlapping, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeqSet {
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    #[cfg(test)]
    pub fn contains(&self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end < seq);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= seq)
    }

    /// Adds `seq`; returns false if it was already present.
    pub fn insert(&mut self, seq: u64) -> bool {
        if let Some(last) = self.ranges.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                return true;
            }
        }
        let i = self.ranges.partition_point(|&(_, end)| end < seq);
        if self.ranges.get(i).is_some_and(|&(start, _)| start <= seq) {
            return false;
        }
        let joins_prev = i > 0 && self.ranges[i - 1].1 + 1 == seq;
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|&(start, _)| start == seq + 1);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = seq,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, seq)),
        }
        true
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.ranges.len() * 16);
        for (a, b) in &self.ranges {
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&b.to_be_bytes());
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() % 16 != 0 {
            return Err(format!(
                "sequence set of {} bytes is not a multiple of 16",
                bytes.len()
            ));
        }
        let mut ranges = Vec::with_capacity(bytes.len() / 16);
        for c in bytes.chunks_exact(16) {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            b.copy_from_slice(&c[8..]);
            let (a, b) = (u64::from_be_bytes(a), u64::from_be_bytes(b));
            if a > b || ranges.last().is_some_and(|&(_, end): &(u64, u64)| end >= a) {
                return Err("sequence set ranges out of order".into());
            }
            ranges.push((a, b));
        }
        Ok(SeqSet { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_and_detect_duplicates() {
        let mut s = SeqSet::default();
        for x in [5, 6, 7, 1, 3, 2, 10] {
            assert!(s.insert(x));
        }
        assert_eq!(s.ranges, vec![(1, 3), (5, 7), (10, 10)]);
        assert!(!s.insert(6));
        assert!(s.insert(4));
        assert_eq!(s.ranges, vec![(1, 7), (10, 10)]);
        assert!(s.contains(7) && !s.contains(8) && s.contains(10) && !s.contains(0));
        assert_eq!(SeqSet::decode(&s.encode()).unwrap(), s);
        assert!(SeqSet::decode(&[0; 15]).is_err());
    }
}
