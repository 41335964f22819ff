//! `palisade-agent loadgen`: drives N simulated agents' batches through real mutual TLS into a
//! collector and reports durable events/s, ack latency and the collector's memory.
//!
//! Frames are built before the clock starts, so the figure measures the collector (TLS, decode,
//! store, fsync), not event generation. Each simulated agent keeps one batch in flight, as a
//! real agent does. Sequences start at the current time in microseconds, so repeated runs
//! against one store are new events, not duplicates.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_wire::batch;
use palisade_wire::client::Client;
use palisade_wire::event::Endpoint;
use palisade_wire::tls::{self, TlsFiles};
use palisade_wire::{Event, EventKind, Severity};
use serde::Serialize;

/// Load generator settings.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// Collector URL.
    pub collector: String,
    /// PKI dir with `ca.crt` and `<prefix>NN.crt/.key` for each simulated agent.
    pub pki_dir: PathBuf,
    /// Name prefix; agent i is `<prefix><i:02>`.
    pub prefix: String,
    /// Simulated agents.
    pub agents: usize,
    /// Events each agent sends.
    pub events_per_agent: usize,
    /// Events per batch.
    pub batch_events: usize,
    /// Collector pid, to read its RSS from /proc.
    pub collector_pid: Option<u32>,
    /// Event mix.
    pub mix: Mix,
    /// Distinct source addresses in the security mix.
    pub groups: u32,
    /// Steady mode: events per second across all agents, sent for `duration` (batches are
    /// built as they are sent, so a soak of any length fits in memory); `events_per_agent` is
    /// then ignored.
    pub rate: Option<u64>,
    /// How long steady mode runs.
    pub duration: Duration,
}

/// What the generated events look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// One synthetic kind: measures the store.
    Synthetic,
    /// 65% flows, 20% logins (1 in 8 a success), 15% detector alerts (scans, DNS tunnelling,
    /// beaconing, IOC hits), from `groups` distinct source addresses: loads correlation with
    /// realistic matching and many groups.
    Security,
    /// As `security`, but one event in 100 a detector alert (the rest flows and logins in the
    /// same proportions): a SOC's everyday share, where `security` is a sustained alert storm.
    Soc,
}

/// A deterministic spread of `n` over `groups` (so every group recurs).
fn group_of(n: u64, groups: u32) -> u32 {
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 % groups
}

fn addr(g: u32) -> std::net::IpAddr {
    std::net::IpAddr::from([10, (g >> 16) as u8, (g >> 8) as u8, g as u8])
}

/// One event of the SOC mix: the security mix's event `m`, with `m` chosen so that one event in
/// 100 is one of its alerts (two scans to one other alert, as there) and the rest are its flows
/// and logins.
pub fn soc_event(agent: &str, n: u64, groups: u32) -> Event {
    // A hash, not `n % 100`: `n` steps by 64 within one agent, so a modulus would give some
    // agents every alert and others none.
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let class = if h % 100 == 0 {
        17 + (h / 100) % 3
    } else {
        n % 17
    };
    security_event(agent, n - n % 20 + class, groups)
}

/// One event of the security mix.
pub fn security_event(agent: &str, n: u64, groups: u32) -> Event {
    use palisade_wire::event::{Network, Rule, User};
    let g = group_of(n, groups);
    let src = Endpoint {
        ip: Some(addr(g)),
        port: Some(40_000 + (n % 20_000) as u16),
        ..Default::default()
    };
    let dst = |port: u16| Endpoint {
        ip: Some(std::net::IpAddr::from([172, 16, (n % 250) as u8, 10])),
        port: Some(port),
        ..Default::default()
    };
    let alert = |id: &str, name: &str, sev: Severity| {
        let mut e = Event::new(agent, EventKind::Alert, sev).with_message(name.to_string());
        e.rule = Some(Rule {
            id: Some(id.into()),
            name: Some(name.into()),
            ..Default::default()
        });
        e
    };
    let mut e = match n % 20 {
        0..=12 => {
            let mut e = Event::new(agent, EventKind::Flow, Severity::Info);
            e.destination = Some(dst([80, 443, 22, 3306][(n % 4) as usize]));
            e.network = Some(Network {
                transport: Some("tcp".into()),
                protocol: Some(["http", "tls", "ssh", "mysql"][(n % 4) as usize].into()),
                ..Default::default()
            });
            e
        }
        13..=16 => {
            let mut e = Event::new(agent, EventKind::Auth, Severity::Low)
                .with_message("login attempt".to_string());
            e.event.action = Some("login".into());
            e.event.outcome = Some(if n % 8 == 0 { "success" } else { "failure" }.into());
            e.user = Some(User {
                name: format!("user{}", g % 5000),
                domain: None,
            });
            e.destination = Some(dst(22));
            e
        }
        17 | 18 => {
            let mut e = alert(
                "palisade.net.port_scan.horizontal",
                "Horizontal port scan",
                Severity::Medium,
            );
            e.destination = Some(dst(445));
            e
        }
        _ => {
            let (id, name) = match n % 60 {
                0..=19 => ("palisade.net.dns_tunnel.long_label", "DNS tunnelling"),
                20..=39 => ("palisade.net.beacon.periodic", "Periodic beaconing"),
                _ => ("palisade.net.ioc.ip", "IOC: known bad address"),
            };
            let mut e = alert(id, name, Severity::High);
            e.destination = Some(dst(53));
            e
        }
    };
    e.source = Some(src);
    e
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadgenReport {
    /// Simulated agents.
    pub agents: usize,
    /// Events acknowledged as durable.
    pub events_acked: u64,
    /// Duplicates the collector reported (should be 0).
    pub duplicates: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// 503 answers (each retried).
    pub busy: u64,
    /// Other 5xx answers (e.g. 500 when the store refuses writes at its free-space reserve),
    /// retried with back-off as an agent does.
    #[serde(default)]
    pub refused: u64,
    /// Requests that failed in transport (connection refused or reset, timeout), retried.
    #[serde(default)]
    pub failed: u64,
    /// Simulated agents that stopped early, with why: a batch still not taken after
    /// [`RETRY_FOR`] of retries. What they had sent before is counted above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
    /// Seconds from first send to last ack.
    pub elapsed_secs: f64,
    /// Durable events per second.
    pub events_per_sec: f64,
    /// Median ack latency (ms).
    pub p50_ms: f64,
    /// 99th percentile ack latency (ms).
    pub p99_ms: f64,
    /// Worst ack latency (ms).
    pub max_ms: f64,
    /// Collector RSS at the end (MiB).
    pub collector_rss_mib: Option<f64>,
    /// Collector peak RSS (MiB).
    pub collector_peak_rss_mib: Option<f64>,
    /// Seconds spent building frames before the clock started.
    pub setup_secs: f64,
    /// Steady mode: what each minute looked like (events acked, ack latency), to show whether
    /// the collector keeps up or slowly falls behind.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub minutes: Vec<MinuteStat>,
    /// Steady mode: how far behind its schedule the slowest simulated agent ended (s).
    #[serde(default)]
    pub behind_secs: f64,
}

/// One minute of a steady run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MinuteStat {
    /// Minutes since the start.
    pub minute: u32,
    /// Events acknowledged for batches sent in that minute.
    pub acked: u64,
    /// Median ack latency (ms).
    pub p50_ms: f64,
    /// 99th percentile ack latency (ms).
    pub p99_ms: f64,
}

/// Load generator errors.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Client setup.
    #[error(transparent)]
    Client(#[from] palisade_wire::client::ClientError),
    /// Encoding.
    #[error(transparent)]
    Batch(#[from] batch::BatchError),
    /// The collector refused something it should accept.
    #[error("agent {agent}: collector answered {status}: {body}")]
    Refused {
        /// Simulated agent.
        agent: String,
        /// Status.
        status: StatusCode,
        /// Body.
        body: String,
    },
}

fn frames_for(
    agent: &str,
    first_seq: u64,
    events: usize,
    per_batch: usize,
    mix: Mix,
    groups: u32,
    agent_index: u64,
) -> Result<Vec<(Bytes, usize)>, LoadgenError> {
    let mut frames = Vec::new();
    let mut seq = first_seq;
    let mut left = events;
    while left > 0 {
        let n = per_batch.min(left);
        frames.push((
            batch_at(agent, first_seq, seq, n, mix, groups, agent_index)?,
            n,
        ));
        seq += n as u64;
        left -= n;
    }
    Ok(frames)
}

/// One batch of `n` events starting at sequence `seq` (`first_seq` is the agent's first).
fn batch_at(
    agent: &str,
    first_seq: u64,
    seq: u64,
    n: usize,
    mix: Mix,
    groups: u32,
    agent_index: u64,
) -> Result<Bytes, LoadgenError> {
    {
        let lines: Vec<(u64, Vec<u8>)> = (0..n)
            .map(|i| {
                let n = (seq - first_seq + i as u64) * 64 + agent_index;
                let mut e = if mix == Mix::Security {
                    security_event(agent, n, groups)
                } else if mix == Mix::Soc {
                    soc_event(agent, n, groups)
                } else {
                    let mut e = Event::new(agent, EventKind::Synthetic, Severity::Info)
                        .with_message(format!("loadgen event {}", seq + i as u64));
                    e.source = Some(Endpoint {
                        ip: Some(std::net::IpAddr::from([10, 0, (i % 200) as u8, 7])),
                        port: Some(40_000 + (i % 1000) as u16),
                        ..Default::default()
                    });
                    e
                };
                e.seal(seq + i as u64);
                (seq + i as u64, e.to_json())
            })
            .collect();
        let pairs: Vec<(u64, &[u8])> = lines.iter().map(|(s, j)| (*s, j.as_slice())).collect();
        Ok(Bytes::from(batch::encode(agent, &pairs, 3)?))
    }
}

fn rss_mib(pid: u32) -> (Option<f64>, Option<f64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs the load and measures it.
pub async fn run(config: LoadgenConfig) -> Result<LoadgenReport, LoadgenError> {
    let setup = Instant::now();
    let first_seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    let mut work = Vec::with_capacity(config.agents);
    for i in 0..config.agents {
        let name = format!("{}{i:02}", config.prefix);
        let files = TlsFiles {
            ca: config.pki_dir.join("ca.crt"),
            cert: config.pki_dir.join(format!("{name}.crt")),
            key: config.pki_dir.join(format!("{name}.key")),
        };
        let client = Client::new(
            &config.collector,
            tls::client_config(&files)?,
            Duration::from_secs(120),
        )?;
        let frames = if config.rate.is_some() {
            Vec::new()
        } else {
            frames_for(
                &name,
                first_seq,
                config.events_per_agent,
                config.batch_events,
                config.mix,
                config.groups,
                i as u64,
            )?
        };
        work.push((name, client, frames));
    }
    let setup_secs = setup.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut tasks = Vec::new();
    // Steady mode: each agent sends one batch every `interval`, on an absolute schedule (a
    // slow answer makes the next batch go at once, never shifts the schedule), agents staggered.
    let steady = config.rate.map(|rate| {
        let per_agent = rate.max(1) as f64 / config.agents.max(1) as f64;
        Duration::from_secs_f64(config.batch_events as f64 / per_agent)
    });
    for (index, (name, mut client, frames)) in work.into_iter().enumerate() {
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            match steady {
                None => {
                    for (frame, n) in frames {
                        if let Err(e) = send(&mut client, &name, frame, n, started, &mut sent).await
                        {
                            sent.stopped = Some(format!("{name}: {e}"));
                            break;
                        }
                    }
                }
                Some(interval) => {
                    let end = started + config.duration;
                    let mut next =
                        started + interval.mul_f64(index as f64 / config.agents.max(1) as f64);
                    let mut seq = first_seq;
                    while next < end {
                        let n = config.batch_events;
                        let frame = batch_at(
                            &name,
                            first_seq,
                            seq,
                            n,
                            config.mix,
                            config.groups,
                            index as u64,
                        )?;
                        seq += n as u64;
                        tokio::time::sleep_until(next.into()).await;
                        if let Err(e) = send(&mut client, &name, frame, n, started, &mut sent).await
                        {
                            sent.stopped = Some(format!("{name}: {e}"));
                            break;
                        }
                        next += interval;
                    }
                    sent.behind = Instant::now().saturating_duration_since(next);
                }
            }
            Ok::<_, LoadgenError>(sent)
        }));
    }
    let mut latencies = Vec::new();
    let mut by_minute: std::collections::BTreeMap<u32, (u64, Vec<Duration>)> = Default::default();
    let (mut acked, mut dups, mut busy, mut refused, mut failed) = (0, 0, 0, 0, 0);
    let mut stopped = Vec::new();
    let mut behind = Duration::ZERO;
    for t in tasks {
        match t.await {
            Ok(Ok(sent)) => {
                for (minute, n, l) in &sent.batches {
                    latencies.push(*l);
                    let m = by_minute.entry(*minute).or_default();
                    m.0 += n;
                    m.1.push(*l);
                }
                acked += sent.acked;
                dups += sent.dups;
                busy += sent.busy;
                refused += sent.refused;
                failed += sent.failed;
                stopped.extend(sent.stopped);
                behind = behind.max(sent.behind);
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(LoadgenError::Refused {
                    agent: "?".into(),
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: e.to_string(),
                })
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| percentile_ms(&latencies, p);
    let minutes = if config.rate.is_some() {
        by_minute
            .into_iter()
            .map(|(minute, (acked, mut l))| {
                l.sort();
                MinuteStat {
                    minute,
                    acked,
                    p50_ms: percentile_ms(&l, 0.50),
                    p99_ms: percentile_ms(&l, 0.99),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let (rss, peak) = config.collector_pid.map(rss_mib).unwrap_or((None, None));
    Ok(LoadgenReport {
        agents: config.agents,
        events_acked: acked,
        duplicates: dups,
        batches: latencies.len() as u64,
        busy,
        refused,
        failed,
        stopped,
        elapsed_secs: elapsed,
        events_per_sec: acked as f64 / elapsed.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        collector_rss_mib: rss,
        collector_peak_rss_mib: peak,
        setup_secs,
        minutes,
        behind_secs: behind.as_secs_f64(),
    })
}

/// The `p` quantile of sorted latencies, in ms.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// What one simulated agent sent.
#[derive(Default)]
struct Sent {
    /// (minute sent, events acked, ack latency) per batch.
    batches: Vec<(u32, u64, Duration)>,
    acked: u64,
    dups: u64,
    busy: u64,
    refused: u64,
    failed: u64,
    stopped: Option<String>,
    behind: Duration,
}

/// How long one batch is retried after server errors or transport failures before its
/// simulated agent gives up.
pub const RETRY_FOR: Duration = Duration::from_secs(120);

/// Back-off before retry number `attempt` (from 0) after a failure: 0.5 s doubling to 8 s,
/// with jitter so that many simulated agents do not retry in step.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((500u64 << attempt.min(4)) + fastrand::u64(0..250))
}

/// Sends one batch until the collector takes it: 503 waits as told; other 5xx answers and
/// transport failures are retried with back-off for up to [`RETRY_FOR`], as an agent keeps
/// its spool and tries again; 4xx answers (the collector refusing what it should accept) end
/// at once.
async fn send(
    client: &mut Client,
    name: &str,
    frame: Bytes,
    n: usize,
    started: Instant,
    sent: &mut Sent,
) -> Result<(), LoadgenError> {
    let t = Instant::now();
    let minute = (t.duration_since(started).as_secs() / 60) as u32;
    let mut attempt = 0;
    loop {
        let resp = match client
            .request(
                Method::POST,
                "/v1/ingest",
                "application/x-palisade-batch",
                frame.clone(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_transient() && t.elapsed() < RETRY_FOR => {
                sent.failed += 1;
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if resp.status.is_server_error()
            && resp.status != StatusCode::SERVICE_UNAVAILABLE
            && t.elapsed() < RETRY_FOR
        {
            sent.refused += 1;
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        }
        if resp.status == StatusCode::SERVICE_UNAVAILABLE {
            sent.busy += 1;
            let secs = resp.retry_after_secs.unwrap_or(1);
            tokio::time::sleep(Duration::from_millis(
                secs * 1000 / 4 + fastrand::u64(0..100),
            ))
            .await;
            continue;
        }
        if resp.status != StatusCode::OK {
            return Err(LoadgenError::Refused {
                agent: name.to_string(),
                status: resp.status,
                body: resp.text(),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        let acked = v
            .get("accepted")
            .and_then(|a| a.as_u64())
            .unwrap_or(n as u64);
        sent.acked += acked;
        sent.dups += v.get("duplicates").and_then(|a| a.as_u64()).unwrap_or(0);
        sent.batches.push((minute, acked, t.elapsed()));
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soc_mix_has_one_alert_in_a_hundred_from_every_agent() {
        for agent_index in 0..16u64 {
            let alerts = (0..20_000u64)
                .map(|c| soc_event("a", c * 64 + agent_index, 1000))
                .filter(|e| e.rule.is_some())
                .count();
            assert!(
                (150..=250).contains(&alerts),
                "agent {agent_index}: {alerts} alerts"
            );
        }
    }
}
