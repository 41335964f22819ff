//! The flow table: a hash map from [`FlowKey`] to a slab of compact [`Flow`]s, threaded on
//! intrusive lists so that per-packet work, idle and active timeouts, and least-recently-seen
//! eviction are all O(1) and allocation-free for packets of existing flows.
//!
//! Each flow sits on two lists. The idle list of its timeout class (TCP opening, TCP open,
//! TCP closing, UDP, other) is ordered by last-seen time because every packet moves its flow to
//! the tail, so expiry pops heads whose `last_seen + timeout` has passed, and the global
//! least-recently-seen flow is the oldest of the five heads. The active list is ordered by
//! record start, so long flows whose record has run `active_timeout_secs` are at its head.
//! Timestamps are capture time; a capture whose timestamps go backwards only delays expiry.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use palisade_wire::Event;
use rustc_hash::FxBuildHasher;

use super::key::{icmp_one_way, is_icmp, Direction, FlowKey};
use super::list::{Linked, Links, List, Which, NIL};
use super::state::{ConnState, History, TcpEndpoint};
use super::{community_id, record, FlowConfig, FlowStats};
use crate::packet::{proto, tcp_flags, PacketMeta};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Why a flow record was emitted (`palisade.flow.end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// TCP closed by FINs from both sides (after the close linger).
    Fin,
    /// TCP aborted by a RST (after the close linger).
    Rst,
    /// No packet for the idle timeout of the flow's class.
    Idle,
    /// The record ran for the active timeout; the flow goes on in a new record.
    Active,
    /// Pushed out by `max_flows` as the least recently seen flow.
    Evicted,
    /// The table was flushed (end of a replay, agent shutdown).
    Shutdown,
}

impl EndReason {
    /// The name used in records: `fin`, `rst`, `idle`, `active`, `evicted`, `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// A handle on a flow for as long as it is in the table; stale handles find nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    index: u32,
    generation: u32,
}

/// What [`FlowTable::observe`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowUpdate {
    /// The packet's flow.
    pub id: FlowId,
    /// True when this packet started the flow (including a new connection on the same
    /// 5-tuple after the previous one closed or went idle).
    pub new_flow: bool,
    /// Which side sent the packet.
    pub direction: Direction,
}

/// Timeout class of a flow: which idle list it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    TcpOpening = 0,
    TcpOpen = 1,
    TcpClosing = 2,
    Udp = 3,
    Other = 4,
    /// A free slab slot (on no list).
    Free = 5,
}

impl Class {
    /// The classes whose flows sit on an idle list, in the order they are expired and flushed.
    const LISTED: [Class; 5] = [
        Class::TcpOpening,
        Class::TcpOpen,
        Class::TcpClosing,
        Class::Udp,
        Class::Other,
    ];
}

const CLASSES: usize = 5;

/// One bidirectional flow. Fixed-size and `Copy`: no heap data, so the table's memory is
/// `max_flows` × `size_of::<Flow>()` plus the hash map.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    key: FlowKey,
    first_seen: i64,
    last_seen: i64,
    /// When the current record's active-timeout clock started.
    active_since: i64,
    packets: [u64; 2],
    bytes: [u64; 2],
    payload_bytes: [u64; 2],
    app: Option<&'static str>,
    history: History,
    tcp: [TcpEndpoint; 2],
    generation: u32,
    idle: Links,
    active: Links,
    class: Class,
    /// Whether the originator is the key's lower endpoint.
    orig_is_lo: bool,
    /// Whether this flow's records are emitted (`sample_rate`).
    sampled: bool,
}

impl Linked for Flow {
    fn links(&mut self, which: Which) -> &mut Links {
        match which {
            Which::Idle => &mut self.idle,
            Which::Active => &mut self.active,
        }
    }
}

impl Flow {
    fn new(key: FlowKey, orig_is_lo: bool, ts: i64, generation: u32, sampled: bool) -> Flow {
        Flow {
            key,
            first_seen: ts,
            last_seen: ts,
            active_since: ts,
            packets: [0; 2],
            bytes: [0; 2],
            payload_bytes: [0; 2],
            app: None,
            history: History::default(),
            tcp: [TcpEndpoint::Inactive; 2],
            generation,
            idle: Links::default(),
            active: Links::default(),
            class: initial_class(key.ip_proto()),
            orig_is_lo,
            sampled,
        }
    }

    /// The flow's key.
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// The originator's `(ip, port)`: the sender of the first packet seen. ICMP "ports" are
    /// the message type and its reply type (or code, for one-way messages).
    pub fn originator(&self) -> (IpAddr, u16) {
        if self.orig_is_lo {
            self.key.lo()
        } else {
            self.key.hi()
        }
    }

    /// The responder's `(ip, port)`.
    pub fn responder(&self) -> (IpAddr, u16) {
        if self.orig_is_lo {
            self.key.hi()
        } else {
            self.key.lo()
        }
    }

    /// Capture time (ns) of the record's first packet.
    pub fn first_seen(&self) -> i64 {
        self.first_seen
    }

    /// Capture time (ns) of the latest packet.
    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    /// Packets sent by `dir` in the current record.
    pub fn packets(&self, dir: Direction) -> u64 {
        self.packets[dir.index()]
    }

    /// Bytes on the wire sent by `dir` in the current record.
    pub fn bytes(&self, dir: Direction) -> u64 {
        self.bytes[dir.index()]
    }

    /// Transport payload bytes (as captured) sent by `dir` in the current record.
    pub fn payload_bytes(&self, dir: Direction) -> u64 {
        self.payload_bytes[dir.index()]
    }

    /// The application protocol of the first packet that had one.
    pub fn app_protocol(&self) -> Option<&'static str> {
        self.app
    }

    /// TCP flag history (see [`History`]); empty for other protocols.
    pub fn history(&self) -> &str {
        self.history.as_str()
    }

    /// TCP endpoint states, originator first.
    pub fn tcp_state(&self) -> (TcpEndpoint, TcpEndpoint) {
        (self.tcp[0], self.tcp[1])
    }

    /// The Zeek `conn_state` summary: from the TCP state machine for TCP, from who sent for
    /// UDP, `OTH` for everything else (as Zeek does for ICMP).
    pub fn conn_state(&self) -> ConnState {
        match self.key.ip_proto() {
            proto::TCP => ConnState::tcp(self.tcp[0], self.tcp[1], self.payload_bytes == [0, 0]),
            proto::UDP => ConnState::udp(self.packets[0], self.packets[1]),
            _ => ConnState::Oth,
        }
    }

    /// The community id v1 of the flow with `seed`.
    pub fn community_id(&self, seed: u16) -> String {
        let ((orig_ip, orig_port), (resp_ip, resp_port)) = (self.originator(), self.responder());
        let ip_proto = self.key.ip_proto();
        let v6 = self.key.is_v6();
        let one_way = is_icmp(ip_proto, v6) && icmp_one_way(orig_port, v6);
        community_id::hash_mapped(
            seed, orig_ip, resp_ip, orig_port, resp_port, ip_proto, one_way,
        )
    }

    fn is_empty(&self) -> bool {
        self.packets == [0, 0]
    }

    /// The timeout class the flow's state puts it in.
    fn current_class(&self) -> Class {
        use TcpEndpoint::*;
        match self.key.ip_proto() {
            proto::TCP => {
                let [o, r] = self.tcp;
                if o == Reset || r == Reset || (o == Closed && r == Closed) {
                    Class::TcpClosing
                } else if matches!(o, Established | Partial) || matches!(r, Established | Partial) {
                    Class::TcpOpen
                } else {
                    Class::TcpOpening
                }
            }
            proto::UDP => Class::Udp,
            _ => Class::Other,
        }
    }

    /// Why a flow in the closing class ended.
    fn close_reason(&self) -> EndReason {
        if self.tcp.contains(&TcpEndpoint::Reset) {
            EndReason::Rst
        } else {
            EndReason::Fin
        }
    }
}

fn initial_class(ip_proto: u8) -> Class {
    match ip_proto {
        proto::TCP => Class::TcpOpening,
        proto::UDP => Class::Udp,
        _ => Class::Other,
    }
}

/// Converts a config duration to nanoseconds, saturating instead of overflowing.
fn secs_to_ns(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SEC)
}

/// Tracks bidirectional flows from packets and emits a record (`EventKind::Flow`) for each
/// finished flow. Built from a [`FlowConfig`]; time comes only from packet timestamps and the
/// `now_ns` passed to [`FlowTable::expire`].
#[derive(Debug)]
pub struct FlowTable {
    agent_id: String,
    seed: u16,
    max_flows: usize,
    sample_rate: u64,
    /// Idle timeout per class, ns.
    timeouts: [i64; CLASSES],
    /// Active timeout, ns; `None` when disabled.
    active_timeout: Option<i64>,
    map: HashMap<FlowKey, u32, FxBuildHasher>,
    slab: Vec<Flow>,
    free: Vec<u32>,
    idle: [List; CLASSES],
    active: List,
    /// Flows finished inside `observe` (evicted, or replaced by a new connection on the same
    /// key); their records go out on the next `expire` or `flush_all`.
    pending: VecDeque<(Flow, EndReason)>,
    /// Whether records are built; when false they are only counted (`emitted`), for a replay
    /// that prints alerts only: building ~100 k records to drop them was most of its time.
    build_records: bool,
    stats: FlowStats,
}

impl FlowTable {
    /// A table with `config`'s limits, emitting records as `agent_id`. Out-of-range values are
    /// clamped (`max_flows`, `sample_rate` and idle timeouts to at least 1); [`FlowConfig::validate`] rejects
    /// them when a config is loaded.
    pub fn new(config: FlowConfig, agent_id: &str) -> FlowTable {
        let max_flows = usize::try_from(config.max_flows)
            .unwrap_or(usize::MAX)
            .clamp(1, NIL as usize - 1);
        let reserve = max_flows.min(1 << 16);
        let mut timeouts = [0; CLASSES];
        // A zero idle timeout would make every packet a new flow.
        let idle_ns = |secs: u64| secs_to_ns(secs.max(1));
        timeouts[Class::TcpOpening as usize] = idle_ns(config.tcp_unestablished_timeout_secs);
        timeouts[Class::TcpOpen as usize] = idle_ns(config.tcp_idle_timeout_secs);
        timeouts[Class::TcpClosing as usize] = idle_ns(config.tcp_close_linger_secs);
        timeouts[Class::Udp as usize] = idle_ns(config.udp_idle_timeout_secs);
        timeouts[Class::Other as usize] = idle_ns(config.other_idle_timeout_secs);
        FlowTable {
            agent_id: agent_id.to_string(),
            seed: config.community_id_seed,
            max_flows,
            sample_rate: config.sample_rate.max(1),
            timeouts,
            active_timeout: (config.active_timeout_secs > 0)
                .then(|| secs_to_ns(config.active_timeout_secs)),
            map: HashMap::with_capacity_and_hasher(reserve, FxBuildHasher),
            slab: Vec::with_capacity(reserve),
            free: Vec::new(),
            idle: [List::default(); CLASSES],
            active: List::default(),
            pending: VecDeque::new(),
            build_records: true,
            stats: FlowStats::default(),
        }
    }

    /// Accounts one packet to its flow, creating the flow if needed. `None` for packets that
    /// belong to no flow (non-IP such as ARP, non-first fragments); they are only counted.
    pub fn observe(&mut self, p: &PacketMeta<'_>) -> Option<FlowUpdate> {
        let Some((key, src_is_lo)) = FlowKey::from_packet(p) else {
            if p.fragment {
                self.stats.fragments += 1;
            } else {
                self.stats.ignored += 1;
            }
            return None;
        };
        let (idx, new_flow) = match self.map.get(&key) {
            Some(&idx) => match self.restart_reason(idx, p) {
                None => (idx, false),
                Some(reason) => {
                    let old = self.remove(idx);
                    self.pending.push_back((old, reason));
                    (self.insert(key, src_is_lo, p.ts), true)
                }
            },
            None => (self.insert(key, src_is_lo, p.ts), true),
        };
        let direction = self.account(idx, p, src_is_lo);
        let generation = self.slab[idx as usize].generation;
        Some(FlowUpdate {
            id: FlowId {
                index: idx,
                generation,
            },
            new_flow,
            direction,
        })
    }

    /// The flow `id` refers to, while it is in the table.
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slab
            .get(id.index as usize)
            .filter(|f| f.class != Class::Free && f.generation == id.generation)
    }

    /// Emits the records of flows that are done at capture time `now_ns`: TCP connections
    /// closed (FIN from both sides, or a RST) for longer than the close linger, flows idle for
    /// their class's timeout, and records of long flows that reached the active timeout (the
    /// flow continues in a new record). Also emits flows finished inside `observe`. Call it at
    /// least once per second of capture time.
    pub fn expire(&mut self, now_ns: i64, out: &mut Vec<Event>) {
        while !self.expire_some(now_ns, out, usize::MAX) {}
    }

    /// Like [`FlowTable::expire`], a step at a time: emits at most `max_flows` records (or
    /// finished flows) and returns whether nothing is left to expire at `now_ns`. Calling it
    /// again until it returns true gives the same records in the same order as one `expire`.
    pub fn expire_some(&mut self, now_ns: i64, out: &mut Vec<Event>, max_flows: usize) -> bool {
        let mut taken = 0;
        if !self.emit_pending(out, &mut taken, max_flows) {
            return false;
        }
        for class in Class::LISTED {
            let timeout = self.timeouts[class as usize];
            while let Some(idx) = self.idle[class as usize].front() {
                let flow = &self.slab[idx as usize];
                if flow.last_seen.saturating_add(timeout) > now_ns {
                    break;
                }
                if taken == max_flows {
                    return false;
                }
                taken += 1;
                let reason = if class == Class::TcpClosing {
                    flow.close_reason()
                } else {
                    EndReason::Idle
                };
                let flow = self.remove(idx);
                self.emit(&flow, reason, out);
            }
        }
        if let Some(active_timeout) = self.active_timeout {
            while let Some(idx) = self.active.front() {
                let flow = self.slab[idx as usize];
                if flow.active_since.saturating_add(active_timeout) > now_ns {
                    break;
                }
                if taken == max_flows {
                    return false;
                }
                taken += 1;
                self.emit(&flow, EndReason::Active, out);
                let flow = &mut self.slab[idx as usize];
                flow.packets = [0; 2];
                flow.bytes = [0; 2];
                flow.payload_bytes = [0; 2];
                flow.first_seen = now_ns;
                flow.active_since = now_ns;
                self.active.move_to_back(&mut self.slab, idx, Which::Active);
            }
        }
        true
    }

    /// Emits flows that already ended (evicted, restarted) and wait in `pending`, counting them
    /// in `taken`; false when `max_flows` was reached first.
    fn emit_pending(&mut self, out: &mut Vec<Event>, taken: &mut usize, max_flows: usize) -> bool {
        while let Some((flow, reason)) = self.pending.pop_front() {
            self.emit(&flow, reason, out);
            *taken += 1;
            if *taken == max_flows {
                return false;
            }
        }
        true
    }

    /// Emits every flow (end of a replay, shutdown) and empties the table. Closed TCP flows
    /// keep their `fin`/`rst` reason; the rest end with `shutdown`.
    pub fn flush_all(&mut self, out: &mut Vec<Event>) {
        while !self.flush(out, usize::MAX) {}
    }

    /// Like [`FlowTable::flush_all`], a step at a time: takes at most `max_flows` flows out of
    /// the table (emitting their records) and returns whether the table is now empty. Lets a
    /// caller hand 100 k+ records on in bounded batches instead of holding them all at once.
    pub fn flush(&mut self, out: &mut Vec<Event>, max_flows: usize) -> bool {
        let mut taken = 0;
        if !self.emit_pending(out, &mut taken, max_flows) {
            return false;
        }
        for class in Class::LISTED {
            while let Some(idx) = self.idle[class as usize].front() {
                if taken == max_flows {
                    return false;
                }
                taken += 1;
                let flow = self.remove(idx);
                let reason = if class == Class::TcpClosing {
                    flow.close_reason()
                } else {
                    EndReason::Shutdown
                };
                self.emit(&flow, reason, out);
            }
        }
        true
    }

    /// Whether flow records are built (the default) or only counted in
    /// [`FlowStats::emitted`]: for a consumer that would drop them unread.
    pub fn set_build_records(&mut self, build: bool) {
        self.build_records = build;
    }

    /// Counters since the table was built.
    pub fn stats(&self) -> FlowStats {
        FlowStats {
            active: self.map.len() as u64,
            ..self.stats
        }
    }

    /// Whether a packet for the existing flow `idx` starts a new connection instead: the flow
    /// has been idle past its timeout (no `expire` ran in between), or a TCP connection that
    /// closed sees a new SYN.
    fn restart_reason(&self, idx: u32, p: &PacketMeta<'_>) -> Option<EndReason> {
        let flow = &self.slab[idx as usize];
        let idle_for = p.ts.saturating_sub(flow.last_seen);
        if idle_for >= self.timeouts[flow.class as usize] {
            return Some(if flow.class == Class::TcpClosing {
                flow.close_reason()
            } else {
                EndReason::Idle
            });
        }
        let new_syn = p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        (flow.class == Class::TcpClosing && p.ip_proto == proto::TCP && new_syn)
            .then(|| flow.close_reason())
    }

    /// Adds a flow for `key`, evicting the least recently seen flow when the table is full.
    fn insert(&mut self, key: FlowKey, orig_is_lo: bool, ts: i64) -> u32 {
        if self.map.len() >= self.max_flows {
            if let Some(victim) = self.least_recently_seen() {
                let flow = self.remove(victim);
                self.pending.push_back((flow, EndReason::Evicted));
                self.stats.evicted += 1;
            }
        }
        let sampled = self.stats.created % self.sample_rate == 0;
        self.stats.created += 1;
        let idx = match self.free.pop() {
            Some(idx) => {
                let slot = &mut self.slab[idx as usize];
                *slot = Flow::new(
                    key,
                    orig_is_lo,
                    ts,
                    slot.generation.wrapping_add(1),
                    sampled,
                );
                idx
            }
            None => {
                // The slab never outgrows max_flows, which is below NIL.
                let idx = u32::try_from(self.slab.len()).unwrap_or(NIL - 1);
                self.slab.push(Flow::new(key, orig_is_lo, ts, 0, sampled));
                idx
            }
        };
        let class = self.slab[idx as usize].class;
        self.idle[class as usize].push_back(&mut self.slab, idx, Which::Idle);
        self.active.push_back(&mut self.slab, idx, Which::Active);
        self.map.insert(key, idx);
        idx
    }

    /// Takes flow `idx` out of the map and lists and frees its slot; returns its last state.
    fn remove(&mut self, idx: u32) -> Flow {
        let flow = self.slab[idx as usize];
        self.idle[flow.class as usize].unlink(&mut self.slab, idx, Which::Idle);
        self.active.unlink(&mut self.slab, idx, Which::Active);
        self.map.remove(&flow.key);
        self.slab[idx as usize].class = Class::Free;
        self.free.push(idx);
        flow
    }

    /// The flow with the oldest last-seen time: the oldest of the idle lists' heads.
    fn least_recently_seen(&self) -> Option<u32> {
        self.idle
            .iter()
            .filter_map(List::front)
            .min_by_key(|&idx| self.slab[idx as usize].last_seen)
    }

    /// Counts packet `p` on flow `idx`, advances its TCP state and moves it to the tail of its
    /// (possibly new) idle list.
    fn account(&mut self, idx: u32, p: &PacketMeta<'_>, src_is_lo: bool) -> Direction {
        let flow = &mut self.slab[idx as usize];
        let direction = if src_is_lo == flow.orig_is_lo {
            Direction::Originator
        } else {
            Direction::Responder
        };
        let d = direction.index();
        if flow.is_empty() {
            // First packet of the flow or of a record after an active timeout.
            flow.first_seen = p.ts;
        }
        flow.last_seen = flow.last_seen.max(p.ts);
        flow.packets[d] += 1;
        flow.bytes[d] += u64::from(p.wire_len);
        flow.payload_bytes[d] += p.payload.len() as u64;
        if flow.app.is_none() {
            flow.app = p.app.protocol;
        }
        if p.ip_proto == proto::TCP {
            let [orig, resp] = &mut flow.tcp;
            match direction {
                Direction::Originator => super::state::tcp_transition(orig, resp, p.tcp_flags),
                Direction::Responder => super::state::tcp_transition(resp, orig, p.tcp_flags),
            }
            flow.history.record(
                p.tcp_flags,
                p.payload.len(),
                direction == Direction::Responder,
            );
        }
        let (old, new) = (flow.class, flow.current_class());
        if old == new {
            self.idle[old as usize].move_to_back(&mut self.slab, idx, Which::Idle);
        } else {
            self.idle[old as usize].unlink(&mut self.slab, idx, Which::Idle);
            self.slab[idx as usize].class = new;
            self.idle[new as usize].push_back(&mut self.slab, idx, Which::Idle);
        }
        direction
    }

    /// Emits the record of `flow` unless it is empty or sampled out; when records are not
    /// built it is only counted.
    fn emit(&mut self, flow: &Flow, reason: EndReason, out: &mut Vec<Event>) {
        if flow.is_empty() {
            return;
        }
        if !flow.sampled {
            self.stats.sampled_out += 1;
            return;
        }
        if self.build_records {
            out.push(record::flow_event(flow, reason, &self.agent_id, self.seed));
        }
        self.stats.emitted += 1;
    }
}
