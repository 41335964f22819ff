//! Version vectors: per file, how many changes each site has made to it. Comparing two tells
//! whether one version has seen the other (apply or ignore) or neither has (a conflict).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Site name → number of changes that site made to one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(pub BTreeMap<String, u64>);

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Same history.
    Equal,
    /// The left one is older: the right has seen everything it has, and more.
    Before,
    /// The left one is newer.
    After,
    /// Each has changes the other has not seen.
    Concurrent,
}

impl VersionVector {
    /// The counter of `site` (0 when it never changed the file).
    pub fn get(&self, site: &str) -> u64 {
        self.0.get(site).copied().unwrap_or(0)
    }

    /// Records one more change by `site`.
    pub fn bump(&mut self, site: &str) {
        let c = self.0.entry(site.to_string()).or_insert(0);
        *c = c.saturating_add(1);
    }

    /// Element-wise maximum: a version that has seen both.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        for (site, &n) in &other.0 {
            let c = out.0.entry(site.clone()).or_insert(0);
            *c = (*c).max(n);
        }
        out
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Order {
        let (mut less, mut more) = (false, false);
        for site in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(site), other.get(site));
            less |= a < b;
            more |= a > b;
        }
        match (less, more) {
            (false, false) => Order::Equal,
            (true, false) => Order::Before,
            (false, true) => Order::After,
            (true, true) => Order::Concurrent,
        }
    }

    /// Whether `self` has seen everything `other` has (equal or newer).
    pub fn covers(&self, other: &VersionVector) -> bool {
        matches!(self.compare(other), Order::Equal | Order::After)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        VersionVector(pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect())
    }

    #[test]
    fn compares_like_a_partial_order() {
        assert_eq!(vv(&[("a", 1)]).compare(&vv(&[("a", 1)])), Order::Equal);
        assert_eq!(vv(&[]).compare(&vv(&[("a", 0)])), Order::Equal);
        assert_eq!(vv(&[("a", 1)]).compare(&vv(&[("a", 2)])), Order::Before);
        assert_eq!(
            vv(&[("a", 2), ("b", 1)]).compare(&vv(&[("a", 2)])),
            Order::After
        );
        assert_eq!(
            vv(&[("a", 2)]).compare(&vv(&[("a", 1), ("b", 1)])),
            Order::Concurrent
        );
    }

    #[test]
    fn merged_covers_both_sides() {
        let (a, b) = (vv(&[("a", 3), ("b", 1)]), vv(&[("a", 1), ("b", 4)]));
        let m = a.merged(&b);
        assert_eq!(m, vv(&[("a", 3), ("b", 4)]));
        assert!(m.covers(&a) && m.covers(&b));
        let mut bumped = m.clone();
        bumped.bump("b");
        assert_eq!(bumped.compare(&m), Order::After);
    }
}
