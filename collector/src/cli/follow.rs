//! `palisade-collector follow`: prints events as the collector stores them, by long-polling
//! `GET /v1/tail` with the cursor of the last answer. Warns on stderr when events were stored
//! faster than it could read them (the collector reports how many), reconnects after the
//! collector goes away, and ends cleanly on Ctrl-C, a closed pipe, `--max-events` or
//! `--for-secs`.

use std::time::Duration;

use clap::Args;
use palisade_wire::output::{EventWriter, OutputFormat};
use palisade_wire::{EventKind, Severity};
use tokio::time::Instant;

use super::{finish_output, get, shutdown_signal, CliError, ClientArgs, Outcome};
use crate::query::{url_encode, Filter};
use crate::tail::{TailHeader, MAX_WAIT_MS};

pub(crate) const EXAMPLES: &str = "Examples:
  palisade-collector follow
  palisade-collector follow --filter 'source.ip in 10.0.0.0/8 and event.severity >= 3'
  palisade-collector follow --kind alert --severity high --output-format ndjson | jq .message
  palisade-collector follow --agent probe-1 --max-events 10 --for-secs 60

Exit codes: 0 events printed, 1 none, 2 error.";

/// Events asked for per request.
const PAGE: usize = 1000;

/// `follow` flags.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Filter expression, e.g. 'source.ip in 10.0.0.0/8 and event.severity >= 4'.
    #[arg(long)]
    pub filter: Option<String>,
    /// Only this kind (heartbeat, gap, flow, alert, integrity, …).
    #[arg(long)]
    pub kind: Option<EventKind>,
    /// Only this severity or higher (info, low, medium, high, critical).
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Show text times in this machine's local time zone instead of UTC.
    #[arg(long)]
    pub local_time: bool,
    /// Stop after printing this many events.
    #[arg(long)]
    pub max_events: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub for_secs: Option<u64>,
}

/// `&filter=…`, checked here first so a typo is reported without a round trip.
pub(crate) fn filter_param(expr: &str) -> Result<String, CliError> {
    Filter::parse(expr).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(format!("&filter={}", url_encode(expr)))
}

fn fixed_params(args: &FollowArgs) -> Result<String, CliError> {
    let mut q = String::new();
    if let Some(f) = &args.filter {
        q.push_str(&filter_param(f)?);
    }
    if let Some(k) = args.kind {
        q.push_str(&format!("&kind={}", k.name()));
    }
    if let Some(s) = args.severity {
        q.push_str(&format!("&severity={}", s.name()));
    }
    if let Some(a) = &args.agent {
        if !palisade_wire::event::valid_agent_id(a) {
            return Err(CliError::Usage(format!(
                "--agent {a:?} is not a valid agent id"
            )));
        }
        q.push_str(&format!("&agent={a}"));
    }
    Ok(q)
}

/// Splits a `/v1/tail` answer into its header line and event lines.
fn parse_answer(body: &[u8]) -> Result<(TailHeader, Vec<&[u8]>), CliError> {
    let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = lines
        .next()
        .and_then(|l| serde_json::from_slice::<TailHeader>(l).ok())
        .ok_or_else(|| CliError::Api {
            status: hyper::StatusCode::OK,
            message: "tail answer without its header line".into(),
        })?;
    Ok((header, lines.collect()))
}

/// Runs `follow`.
pub(crate) async fn run(args: FollowArgs) -> Result<Outcome, CliError> {
    let params = fixed_params(&args)?;
    let mut client = args.client.client()?;
    let started = Instant::now();
    let deadline = args.for_secs.map(|s| started + Duration::from_secs(s));
    // Leave the client's own timeout room to receive the answer.
    let max_wait = Duration::from_millis(MAX_WAIT_MS).min(Duration::from_secs(
        args.client.timeout_secs.saturating_sub(5).max(1),
    ));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    let mut writer = match EventWriter::new(std::io::stdout(), args.output_format) {
        Ok(w) => w.local_time(args.local_time),
        Err(e) => return finish_output(Err(e)).map(|_| Outcome::NothingFound),
    };
    let mut printed = 0usize;
    let mut position: Option<(u64, u64)> = None; // (cursor, epoch)
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        if args.max_events.is_some_and(|m| printed >= m) {
            break;
        }
        let now = Instant::now();
        let wait = match deadline {
            Some(d) if d <= now => break,
            Some(d) => max_wait.min(d - now),
            None => max_wait,
        };
        let want = args
            .max_events
            .map_or(PAGE, |m| (m - printed).clamp(1, PAGE));
        let mut path = format!("/v1/tail?wait_ms={}&limit={want}{params}", wait.as_millis());
        if let Some((cursor, epoch)) = position {
            path.push_str(&format!("&cursor={cursor}&epoch={epoch}"));
        }
        let answer = tokio::select! {
            a = get(&mut client, &path) => a,
            _ = &mut shutdown => break,
        };
        let body = match answer {
            Ok(b) => b,
            // Before the first answer an error is fatal (wrong address, refused certificate);
            // afterwards the collector may be restarting: keep trying.
            Err(CliError::Client(e)) if connected_once => {
                eprintln!(
                    "palisade-collector: warning: {e}; retrying in {:.1} s",
                    backoff.as_secs_f64()
                );
                let sleep = deadline.map_or(backoff, |d| {
                    backoff.min(d.saturating_duration_since(Instant::now()))
                });
                tokio::select! {
                    _ = tokio::time::sleep(sleep) => {}
                    _ = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(e),
        };
        connected_once = true;
        backoff = Duration::from_millis(250);
        let (header, events) = parse_answer(&body)?;
        if header.reset {
            eprintln!(
                "palisade-collector: warning: the collector restarted; events stored just before the restart may be missing here (list them with `events --since`)"
            );
        }
        if header.missed > 0 {
            eprintln!(
                "palisade-collector: warning: {} events were stored faster than this follow read them and were skipped (list them with `events --since`)",
                header.missed
            );
        }
        position = Some((header.next_cursor, header.epoch));
        for e in events {
            if args.max_events.is_some_and(|m| printed >= m) {
                break;
            }
            if let Err(e) = writer.write_raw(e) {
                finish_output(Err(e))?;
                return Ok(Outcome::Found);
            }
            printed += 1;
        }
    }
    finish_output(writer.finish().map(|_| ()))?;
    Ok(if printed > 0 {
        Outcome::Found
    } else {
        Outcome::NothingFound
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_split_into_header_and_events() {
        let body = b"{\"next_cursor\":7,\"epoch\":3,\"missed\":2,\"reset\":false,\"count\":2}\n{\"a\":1}\n{\"a\":2}\n";
        let (h, events) = parse_answer(body).unwrap();
        assert_eq!((h.next_cursor, h.epoch, h.missed, h.count), (7, 3, 2, 2));
        assert_eq!(events.len(), 2);
        assert!(parse_answer(b"").is_err());
    }

    #[test]
    fn a_bad_filter_is_a_usage_error() {
        let e = filter_param("a = ").unwrap_err().to_string();
        assert_eq!(e, "filter: expected a value after '=' at column 5");
        assert_eq!(filter_param("a = 1").unwrap(), "&filter=a%20%3D%201");
    }
}
