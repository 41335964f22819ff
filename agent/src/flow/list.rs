//! Intrusive doubly linked lists of slab indices: the flow table keeps its flows ordered by
//! last-seen time (one list per timeout class) and by record start (for active timeouts)
//! without allocating, with O(1) append, unlink and pop-front.

/// "No entry".
pub(crate) const NIL: u32 = u32::MAX;

/// A node's neighbours in one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Links {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: NIL,
            next: NIL,
        }
    }
}

/// A list's ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
        }
    }
}

/// Slab entries that carry links for one or more lists; `links` picks the list.
pub(crate) trait Linked {
    fn links(&mut self, which: Which) -> &mut Links;
}

/// Which of a node's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Ordered by last-seen (idle timeouts, LRU eviction).
    Idle,
    /// Ordered by record start (active timeouts).
    Active,
}

impl List {
    /// Appends `idx` (not in this list) at the tail.
    pub(crate) fn push_back<T: Linked>(&mut self, slab: &mut [T], idx: u32, which: Which) {
        let old_tail = self.tail;
        if let Some(node) = slab.get_mut(idx as usize) {
            *node.links(which) = Links {
                prev: old_tail,
                next: NIL,
            };
        }
        match slab.get_mut(old_tail as usize) {
            Some(tail) => tail.links(which).next = idx,
            None => self.head = idx,
        }
        self.tail = idx;
    }

    /// Removes `idx`, which must be in this list.
    pub(crate) fn unlink<T: Linked>(&mut self, slab: &mut [T], idx: u32, which: Which) {
        let Some(node) = slab.get_mut(idx as usize) else {
            return;
        };
        let Links { prev, next } = std::mem::take(node.links(which));
        match slab.get_mut(prev as usize) {
            Some(p) => p.links(which).next = next,
            None => self.head = next,
        }
        match slab.get_mut(next as usize) {
            Some(n) => n.links(which).prev = prev,
            None => self.tail = prev,
        }
    }

    /// Moves `idx` (in this list) to the tail.
    pub(crate) fn move_to_back<T: Linked>(&mut self, slab: &mut [T], idx: u32, which: Which) {
        if self.tail != idx {
            self.unlink(slab, idx, which);
            self.push_back(slab, idx, which);
        }
    }

    /// The first entry, if any.
    pub(crate) fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Node {
        idle: Links,
        active: Links,
    }

    impl Linked for Node {
        fn links(&mut self, which: Which) -> &mut Links {
            match which {
                Which::Idle => &mut self.idle,
                Which::Active => &mut self.active,
            }
        }
    }

    fn collect(list: &List, slab: &mut [Node]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = list.head;
        while i != NIL {
            out.push(i);
            i = slab[i as usize].links(Which::Idle).next;
        }
        out
    }

    #[test]
    fn append_unlink_move() {
        let mut slab: Vec<Node> = (0..4).map(|_| Node::default()).collect();
        let mut list = List::default();
        for i in 0..4 {
            list.push_back(&mut slab, i, Which::Idle);
        }
        assert_eq!(collect(&list, &mut slab), [0, 1, 2, 3]);
        list.move_to_back(&mut slab, 0, Which::Idle);
        list.move_to_back(&mut slab, 2, Which::Idle);
        assert_eq!(collect(&list, &mut slab), [1, 3, 0, 2]);
        list.unlink(&mut slab, 2, Which::Idle);
        list.unlink(&mut slab, 1, Which::Idle);
        assert_eq!(collect(&list, &mut slab), [3, 0]);
        assert_eq!(list.front(), Some(3));
        list.unlink(&mut slab, 3, Which::Idle);
        list.unlink(&mut slab, 0, Which::Idle);
        assert_eq!(list.front(), None);
        assert_eq!(list.tail, NIL);
        // The other list's links were never touched.
        assert!(slab
            .iter_mut()
            .all(|n| *n.links(Which::Active) == Links::default()));
    }
}
