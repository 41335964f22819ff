//! DR drills from runbooks. STUB: replaced by the drill work.
