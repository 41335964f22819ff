//! `palisade-collector agents`: every agent the collector has seen, its version, when it was
//! last heard from, and when its client certificate expires (renew before it does: an agent
//! with an expired certificate is refused at the TLS handshake and only spools).

use std::io::Write;

use clap::Args;
use palisade_wire::output::OutputFormat;
use palisade_wire::Timestamp;
use serde::Serialize;

use super::incidents::{when, TimeArgs};
use super::{ago, finish_output, get, runtime, CliError, ClientArgs, Outcome};
use crate::store::AgentRecord;

/// Examples shown by `agents --help`.
pub const EXAMPLES: &str = "Examples:\n  palisade-collector agents\n  palisade-collector agents --expiring-within-days 60 --output-format json\n  palisade-collector agents --offline\n\nExit codes: 0 agents listed, 1 none matched, 2 error.";

/// `agents` flags.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// An agent not heard from for this many seconds is offline (heartbeats come every 30 s
    /// by default).
    #[arg(long, default_value_t = 180)]
    pub offline_after_secs: u64,
    /// Certificates expiring within this many days are flagged.
    #[arg(long, default_value_t = 30)]
    pub expiring_within_days: u32,
    /// Only offline agents.
    #[arg(long)]
    pub offline: bool,
    /// Only agents whose certificate is expired or expiring.
    #[arg(long)]
    pub expiring: bool,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Times.
    #[command(flatten)]
    pub time: TimeArgs,
}

/// One row: the stored record plus what was judged from it now.
#[derive(Debug, Serialize)]
pub struct AgentRow {
    /// The collector's record.
    #[serde(flatten)]
    pub record: AgentRecord,
    /// `online` or `offline`.
    pub state: &'static str,
    /// `ok`, `expiring`, `expired`, or `unknown` (not connected since the collector began
    /// recording certificates).
    pub certificate: &'static str,
    /// Whole days until the certificate expires (negative once expired).
    pub certificate_days_left: Option<i64>,
}

/// Judges one agent at `now`.
pub fn row(
    record: AgentRecord,
    now: Timestamp,
    offline_after_secs: u64,
    warn_days: u32,
) -> AgentRow {
    let silent = (now.nanos() - record.last_seen.nanos()).max(0) as u64 / 1_000_000_000;
    let state = if silent > offline_after_secs {
        "offline"
    } else {
        "online"
    };
    let days_left = record
        .cert_not_after
        .map(|t| (t.nanos() - now.nanos()).div_euclid(86_400 * 1_000_000_000));
    let certificate = match record.cert_not_after {
        None => "unknown",
        Some(t) if t <= now => "expired",
        Some(_) if days_left.unwrap_or(0) < i64::from(warn_days) => "expiring",
        Some(_) => "ok",
    };
    AgentRow {
        record,
        state,
        certificate,
        certificate_days_left: days_left,
    }
}

/// `agents`.
pub fn run(args: AgentsArgs) -> Result<Outcome, CliError> {
    let body = runtime()?.block_on(async {
        let mut c = args.client.client()?;
        get(&mut c, "/v1/agents").await
    })?;
    let records: Vec<AgentRecord> = serde_json::from_slice(&body).map_err(|e| CliError::Api {
        status: hyper::StatusCode::OK,
        message: format!("unreadable agent list: {e}"),
    })?;
    let now = Timestamp::now();
    let rows: Vec<AgentRow> = records
        .into_iter()
        .map(|r| row(r, now, args.offline_after_secs, args.expiring_within_days))
        .filter(|r| !args.offline || r.state == "offline")
        .filter(|r| !args.expiring || matches!(r.certificate, "expired" | "expiring"))
        .collect();
    let mut out = std::io::stdout().lock();
    let written = write_rows(
        &mut out,
        &rows,
        args.output_format,
        now,
        args.time.local_time,
    );
    finish_output(written)?;
    Ok(if rows.is_empty() {
        Outcome::NothingFound
    } else {
        Outcome::Found
    })
}

fn write_rows(
    out: &mut impl Write,
    rows: &[AgentRow],
    format: OutputFormat,
    now: Timestamp,
    local: bool,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, rows)?;
            writeln!(out)
        }
        OutputFormat::Ndjson => rows.iter().try_for_each(|r| {
            serde_json::to_writer(&mut *out, r)?;
            writeln!(out)
        }),
        OutputFormat::Text => {
            if rows.is_empty() {
                return Ok(());
            }
            writeln!(
                out,
                "{:<20} {:<16} {:<9} {:<8} {:<12} {:<34} {:>10} {:>8}",
                "AGENT",
                "HOST",
                "VERSION",
                "STATE",
                "LAST SEEN",
                "CERTIFICATE",
                "EVENTS",
                "DROPPED"
            )?;
            for r in rows {
                let a = &r.record;
                let cert = match (a.cert_not_after, r.certificate_days_left) {
                    (Some(t), Some(d)) => match r.certificate {
                        "expired" => format!("EXPIRED {}", when(t, local)),
                        "expiring" => format!("EXPIRING in {d}d ({})", &when(t, local)[..10]),
                        _ => format!("ok, {d}d left"),
                    },
                    _ => "unknown".into(),
                };
                writeln!(
                    out,
                    "{:<20} {:<16} {:<9} {:<8} {:<12} {:<34} {:>10} {:>8}",
                    a.id,
                    a.host.as_deref().unwrap_or("-"),
                    a.version.as_deref().unwrap_or("-"),
                    r.state,
                    ago(now, a.last_seen),
                    cert,
                    a.events,
                    a.dropped
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * 1_000_000_000;

    fn rec(last_seen: i64, not_after: Option<i64>) -> AgentRecord {
        AgentRecord {
            id: "probe-1".into(),
            last_seen: Timestamp(last_seen),
            cert_not_after: not_after.map(Timestamp),
            ..Default::default()
        }
    }

    #[test]
    fn state_and_certificate_are_judged_at_now() {
        let now = Timestamp(1_000 * DAY);
        let r = row(
            rec(now.0 - 10_000_000_000, Some(now.0 + 90 * DAY)),
            now,
            180,
            30,
        );
        assert_eq!(
            (r.state, r.certificate, r.certificate_days_left),
            ("online", "ok", Some(90))
        );
        let r = row(
            rec(now.0 - 600_000_000_000, Some(now.0 + 10 * DAY)),
            now,
            180,
            30,
        );
        assert_eq!((r.state, r.certificate), ("offline", "expiring"));
        let r = row(rec(now.0, Some(now.0 - DAY)), now, 180, 30);
        assert_eq!(
            (r.certificate, r.certificate_days_left),
            ("expired", Some(-1))
        );
        let r = row(rec(now.0, None), now, 180, 30);
        assert_eq!(r.certificate, "unknown");
    }

    #[test]
    fn text_lists_version_and_expiry() {
        let now = Timestamp(1_000 * DAY);
        let mut a = rec(now.0, Some(now.0 + 5 * DAY));
        a.version = Some("0.1.0".into());
        let rows = vec![row(a, now, 180, 30)];
        let mut out = Vec::new();
        write_rows(&mut out, &rows, OutputFormat::Text, now, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("0.1.0") && text.contains("EXPIRING in 5d"),
            "{text}"
        );
    }
}
