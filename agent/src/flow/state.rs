//! Per-flow protocol state: the TCP endpoint state machine, the Zeek-style `conn_state`
//! summary derived from it, and the `history` string of flag letters.

use std::fmt;

use crate::packet::tcp_flags;

/// What one side of a TCP connection has been seen doing (Zeek's `TCP_ENDPOINT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpEndpoint {
    /// Nothing sent yet.
    #[default]
    Inactive,
    /// Sent a SYN without ACK.
    SynSent,
    /// Sent a SYN+ACK.
    SynAckSent,
    /// Sent traffic without a SYN seen first (the capture started mid-connection).
    Partial,
    /// Completed the three-way handshake.
    Established,
    /// Sent a FIN.
    Closed,
    /// Sent a RST.
    Reset,
}

impl TcpEndpoint {
    /// Inactive or mid-stream: Zeek counts both as "never opened a connection".
    fn inactive(self) -> bool {
        matches!(self, TcpEndpoint::Inactive | TcpEndpoint::Partial)
    }
}

/// Advances the endpoint states for one TCP segment with `flags` sent by `me` to `peer`.
/// A RST resets the sender; a SYN opens (SYN) or answers (SYN+ACK); an ACK from a side in the
/// handshake completes it for both sides; a FIN closes the sender; anything from a side not in
/// the handshake marks it mid-stream.
pub(crate) fn tcp_transition(me: &mut TcpEndpoint, peer: &mut TcpEndpoint, flags: u8) {
    use TcpEndpoint::*;
    let (syn, ack) = (flags & tcp_flags::SYN != 0, flags & tcp_flags::ACK != 0);
    if flags & tcp_flags::RST != 0 {
        *me = Reset;
        return;
    }
    if syn {
        if matches!(*me, Inactive | SynSent) {
            *me = if ack { SynAckSent } else { SynSent };
        }
    } else if ack && matches!(*me, SynSent | SynAckSent) {
        if matches!(*peer, SynSent | SynAckSent | Established) {
            *me = Established;
            if matches!(*peer, SynSent | SynAckSent) {
                *peer = Established;
            }
        }
    } else if *me == Inactive {
        *me = Partial;
    }
    if flags & tcp_flags::FIN != 0 && *me != Reset {
        *me = Closed;
    }
}

/// Zeek's `conn_state` summary of how a connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// `S0`: connection attempt, no reply.
    S0,
    /// `S1`: established, not terminated.
    S1,
    /// `SF`: normal establishment and termination (for UDP: both sides sent).
    Sf,
    /// `REJ`: attempt rejected (RST answered the SYN).
    Rej,
    /// `S2`: established, originator closed, no reply from the responder.
    S2,
    /// `S3`: established, responder closed, no reply from the originator.
    S3,
    /// `RSTO`: established, originator aborted with a RST.
    Rsto,
    /// `RSTR`: established, responder aborted with a RST.
    Rstr,
    /// `RSTOS0`: originator sent a SYN then a RST, no SYN+ACK seen.
    Rstos0,
    /// `RSTRH`: responder sent a SYN+ACK then a RST, no SYN from the originator seen.
    Rstrh,
    /// `SH`: originator sent a SYN then a FIN, no SYN+ACK seen ("half open").
    Sh,
    /// `SHR`: responder sent a SYN+ACK then a FIN, no SYN seen.
    Shr,
    /// `OTH`: no SYN seen, mid-stream traffic (and every non-TCP, non-UDP flow).
    Oth,
}

impl ConnState {
    /// The Zeek `conn.log` spelling (`SF`, `REJ`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::Sf => "SF",
            ConnState::Rej => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::Rsto => "RSTO",
            ConnState::Rstr => "RSTR",
            ConnState::Rstos0 => "RSTOS0",
            ConnState::Rstrh => "RSTRH",
            ConnState::Sh => "SH",
            ConnState::Shr => "SHR",
            ConnState::Oth => "OTH",
        }
    }

    /// The summary for TCP endpoint states, as Zeek's `conn_state()` derives it.
    /// `no_payload` means neither side sent payload (a RST from both sides before any data
    /// is still a rejection).
    pub(crate) fn tcp(orig: TcpEndpoint, resp: TcpEndpoint, no_payload: bool) -> ConnState {
        use TcpEndpoint::*;
        if resp == Reset {
            if matches!(orig, SynSent | SynAckSent) || (orig == Reset && no_payload) {
                ConnState::Rej
            } else if orig.inactive() {
                ConnState::Rstrh
            } else {
                ConnState::Rstr
            }
        } else if orig == Reset {
            if resp.inactive() {
                ConnState::Rstos0
            } else {
                ConnState::Rsto
            }
        } else if orig == Closed && resp == Closed {
            ConnState::Sf
        } else if orig == Closed {
            if resp.inactive() {
                ConnState::Sh
            } else {
                ConnState::S2
            }
        } else if resp == Closed {
            if orig.inactive() {
                ConnState::Shr
            } else {
                ConnState::S3
            }
        } else if orig == SynSent && resp == Inactive {
            ConnState::S0
        } else if orig == Established && resp == Established {
            ConnState::S1
        } else {
            ConnState::Oth
        }
    }

    /// The summary for UDP: `SF` when both sides sent, `S0` when only the originator did.
    pub(crate) fn udp(orig_packets: u64, resp_packets: u64) -> ConnState {
        match (orig_packets > 0, resp_packets > 0) {
            (true, true) => ConnState::Sf,
            (true, false) => ConnState::S0,
            (false, true) => ConnState::Shr,
            (false, false) => ConnState::Oth,
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Zeek-style TCP `history`: each letter at most once per direction, in the order first seen;
/// upper case for the originator, lower case for the responder.
///
/// - `S` a SYN without ACK, `H` a SYN+ACK,
/// - `A` a pure ACK (ACK set, no SYN/FIN/RST, no payload),
/// - `D` a segment with payload, `F` a FIN, `R` a RST.
///
/// A segment can add several letters, in the order `S`/`H`, `A`, `D`, `F`, `R`. A normal
/// connection reads `ShADadFf`: SYN, SYN+ACK, ACK, originator data, responder ACK, responder
/// data, FIN from each side (the final ACK repeats `A` and adds nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    letters: [u8; 12],
    len: u8,
    /// Bit `i` set when letter `LETTERS[i]` was recorded; responder letters are bits 6..12.
    seen: u16,
}

const LETTERS: [u8; 6] = *b"SHADFR";

impl History {
    /// Records the letters for one TCP segment; `responder` selects lower case.
    pub(crate) fn record(&mut self, flags: u8, payload_len: usize, responder: bool) {
        let (syn, ack) = (flags & tcp_flags::SYN != 0, flags & tcp_flags::ACK != 0);
        let (fin, rst) = (flags & tcp_flags::FIN != 0, flags & tcp_flags::RST != 0);
        if syn {
            self.push(if ack { 1 } else { 0 }, responder);
        }
        if ack && !syn && !fin && !rst && payload_len == 0 {
            self.push(2, responder);
        }
        if payload_len > 0 {
            self.push(3, responder);
        }
        if fin {
            self.push(4, responder);
        }
        if rst {
            self.push(5, responder);
        }
    }

    fn push(&mut self, letter: usize, responder: bool) {
        let bit = 1u16 << (letter + if responder { 6 } else { 0 });
        if self.seen & bit != 0 {
            return;
        }
        self.seen |= bit;
        let c = LETTERS[letter];
        if let Some(slot) = self.letters.get_mut(usize::from(self.len)) {
            *slot = if responder { c.to_ascii_lowercase() } else { c };
            self.len += 1;
        }
    }

    /// The letters recorded so far.
    pub fn as_str(&self) -> &str {
        let letters = self.letters.get(..usize::from(self.len)).unwrap_or(&[]);
        // Only ASCII letters are ever stored.
        std::str::from_utf8(letters).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};

    #[test]
    fn history_records_each_letter_once_per_direction() {
        let mut h = History::default();
        h.record(SYN, 0, false);
        h.record(SYN | ACK, 0, true);
        h.record(ACK, 0, false);
        h.record(ACK, 10, false);
        h.record(ACK, 0, true);
        h.record(ACK, 20, true);
        h.record(ACK, 10, false);
        h.record(FIN | ACK, 0, false);
        h.record(FIN | ACK, 0, true);
        h.record(ACK, 0, false);
        assert_eq!(h.as_str(), "ShADadFf");
    }

    #[test]
    fn every_letter_fits() {
        let mut h = History::default();
        for responder in [false, true] {
            h.record(SYN, 0, responder);
            h.record(SYN | ACK, 0, responder);
            h.record(ACK, 0, responder);
            h.record(ACK | FIN, 1, responder);
            h.record(RST, 0, responder);
        }
        assert_eq!(h.as_str(), "SHADFRshadfr");
    }

    fn run(segments: &[(bool, u8)]) -> (TcpEndpoint, TcpEndpoint) {
        let (mut orig, mut resp) = (TcpEndpoint::Inactive, TcpEndpoint::Inactive);
        for &(from_resp, flags) in segments {
            if from_resp {
                tcp_transition(&mut resp, &mut orig, flags);
            } else {
                tcp_transition(&mut orig, &mut resp, flags);
            }
        }
        (orig, resp)
    }

    #[test]
    fn conn_states_follow_zeek() {
        let handshake = [(false, SYN), (true, SYN | ACK), (false, ACK)];
        let cases: &[(&[(bool, u8)], ConnState)] = &[
            (&[(false, SYN)], ConnState::S0),
            (&handshake, ConnState::S1),
            (&[(false, SYN), (true, RST | ACK)], ConnState::Rej),
            (&[(false, SYN), (false, RST)], ConnState::Rstos0),
            (&[(false, SYN), (false, FIN)], ConnState::Sh),
            (&[(false, ACK), (true, ACK)], ConnState::Oth),
            (&[(false, SYN | ACK), (false, RST)], ConnState::Rstos0),
        ];
        for (segments, want) in cases {
            let (o, r) = run(segments);
            assert_eq!(ConnState::tcp(o, r, true), *want, "{segments:?}");
        }
        let mut fin = handshake.to_vec();
        fin.extend([(false, FIN | ACK), (true, FIN | ACK), (false, ACK)]);
        let (o, r) = run(&fin);
        assert_eq!(ConnState::tcp(o, r, false), ConnState::Sf);
        let mut half = handshake.to_vec();
        half.push((false, FIN | ACK));
        let (o, r) = run(&half);
        assert_eq!(ConnState::tcp(o, r, false), ConnState::S2);
        let mut rsto = handshake.to_vec();
        rsto.push((false, RST));
        let (o, r) = run(&rsto);
        assert_eq!(ConnState::tcp(o, r, false), ConnState::Rsto);
        let mut rstr = handshake.to_vec();
        rstr.push((true, RST));
        let (o, r) = run(&rstr);
        assert_eq!(ConnState::tcp(o, r, false), ConnState::Rstr);
    }

    #[test]
    fn udp_states() {
        assert_eq!(ConnState::udp(1, 1), ConnState::Sf);
        assert_eq!(ConnState::udp(3, 0), ConnState::S0);
        assert_eq!(ConnState::Rej.to_string(), "REJ");
    }
}
