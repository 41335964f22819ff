//! Flow records: a finished [`Flow`] as an ECS `Event` (`event.dataset: palisade.flow`), the
//! only place flow data becomes strings.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use palisade_wire::event::{Endpoint, Network};
use palisade_wire::{Event, EventKind, Severity, Timestamp};
use serde_json::json;

use super::key::{has_ports, Direction};
use super::table::{EndReason, Flow};
use crate::detect::transport_name;

/// The record of `flow`, ended for `reason`, from `agent_id`: `@timestamp` is the flow's
/// start, `source` the originator, `destination` the responder, details under
/// `palisade.flow`.
pub(crate) fn flow_event(flow: &Flow, reason: EndReason, agent_id: &str, seed: u16) -> Event {
    let ip_proto = flow.key().ip_proto();
    let ports = has_ports(ip_proto);
    let (orig_ip, orig_port) = flow.originator();
    let (resp_ip, resp_port) = flow.responder();
    let (o, r) = (Direction::Originator, Direction::Responder);
    let packets = flow.packets(o) + flow.packets(r);
    let bytes = flow.bytes(o) + flow.bytes(r);
    let transport = transport_name(ip_proto)
        .map(str::to_string)
        .unwrap_or_else(|| ip_proto.to_string());
    let state = flow.conn_state();
    let duration_ns = flow.last_seen().saturating_sub(flow.first_seen()).max(0);
    let duration_secs = duration_ns as f64 / 1e9;

    // Written piece by piece into one buffer: a record is built per flow, and the temporary
    // strings of a single `format!` showed up in replay profiles.
    let mut message = String::with_capacity(96);
    message.push_str(&transport);
    message.push(' ');
    write_endpoint(&mut message, orig_ip, ports.then_some(orig_port));
    message.push_str(" -> ");
    write_endpoint(&mut message, resp_ip, ports.then_some(resp_port));
    let _ = write!(message, " {state} {packets} pkts ");
    write_human_bytes(&mut message, bytes);
    message.push(' ');
    write_human_duration(&mut message, duration_secs);

    let mut e = Event::new(agent_id, EventKind::Flow, Severity::Info);
    e.timestamp = Timestamp(flow.first_seen());
    e.event.category = vec!["network".to_string()];
    e.event.kind_type = vec!["connection".to_string(), "end".to_string()];
    e.event.action = Some("flow".to_string());
    e.source = Some(Endpoint {
        ip: Some(orig_ip),
        port: ports.then_some(orig_port),
        mac: None,
        bytes: Some(flow.bytes(o)),
        packets: Some(flow.packets(o)),
    });
    e.destination = Some(Endpoint {
        ip: Some(resp_ip),
        port: ports.then_some(resp_port),
        mac: None,
        bytes: Some(flow.bytes(r)),
        packets: Some(flow.packets(r)),
    });
    e.network = Some(Network {
        transport: Some(transport),
        protocol: flow.app_protocol().map(str::to_string),
        community_id: Some(flow.community_id(seed)),
        bytes: Some(bytes),
        packets: Some(packets),
    });
    e.message = Some(message);
    e.palisade = Some(json!({
        "flow": {
            "duration_secs": duration_secs,
            "state": state.as_str(),
            "history": flow.history(),
            "vlan": flow.key().vlan(),
            "end_reason": reason.as_str(),
            "payload_bytes": {
                "orig": flow.payload_bytes(o),
                "resp": flow.payload_bytes(r),
            },
        }
    }));
    e
}

/// Appends `10.0.0.1:80`, `[2001:db8::1]:443`, or the bare address for protocols without
/// ports. IPv4 digits are pushed directly: `Ipv4Addr`'s `Display` goes through the formatting
/// machinery once per octet, which was a visible share of building a record.
fn write_endpoint(out: &mut String, ip: IpAddr, port: Option<u16>) {
    match (ip, port) {
        (IpAddr::V4(v4), port) => {
            let [a, b, c, d] = v4.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, u32::from(octet));
            }
            if let Some(port) = port {
                out.push(':');
                push_decimal(out, u32::from(port));
            }
        }
        (IpAddr::V6(_), Some(port)) => {
            let _ = write!(out, "{}", SocketAddr::new(ip, port));
        }
        (IpAddr::V6(v6), None) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut n = n;
    loop {
        if let Some(slot) = digits.get_mut(len) {
            *slot = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in digits.iter().take(len).rev() {
        out.push(char::from(digit));
    }
}

/// Appends `512 B`, `3.4 KB`, `12.0 MB`, `1.5 GB` (powers of 1024).
fn write_human_bytes(out: &mut String, bytes: u64) {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        let _ = write!(out, "{bytes} B");
        return;
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let _ = write!(out, "{value:.1} {}", UNITS[unit]);
}

/// Appends `0.004 s` under a second, `1.2 s` above.
fn write_human_duration(out: &mut String, secs: f64) {
    if secs < 1.0 {
        let _ = write!(out, "{secs:.3} s");
    } else {
        let _ = write!(out, "{secs:.1} s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human_bytes(bytes: u64) -> String {
        let mut s = String::new();
        write_human_bytes(&mut s, bytes);
        s
    }

    fn human_duration(secs: f64) -> String {
        let mut s = String::new();
        write_human_duration(&mut s, secs);
        s
    }

    fn endpoint_text(ip: IpAddr, port: Option<u16>) -> String {
        let mut s = String::new();
        write_endpoint(&mut s, ip, port);
        s
    }

    #[test]
    fn endpoints_match_std_formatting() {
        for (ip, port) in [
            ("0.0.0.0", 0),
            ("10.0.0.1", 80),
            ("255.255.255.255", 65535),
            ("192.168.100.9", 8080),
            ("2001:db8::1", 443),
            ("::ffff:10.1.2.3", 53),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                endpoint_text(ip, Some(port)),
                SocketAddr::new(ip, port).to_string()
            );
            assert_eq!(endpoint_text(ip, None), ip.to_string());
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3482), "3.4 KB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MB");
        assert_eq!(human_duration(1.23), "1.2 s");
        assert_eq!(human_duration(0.0042), "0.004 s");
        assert_eq!(
            endpoint_text("2001:db8::1".parse().unwrap(), Some(443)),
            "[2001:db8::1]:443"
        );
        assert_eq!(endpoint_text("10.0.0.1".parse().unwrap(), None), "10.0.0.1");
    }
}
