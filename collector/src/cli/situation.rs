//! `palisade-collector situation [--watch]`: the SOC screen.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use palisade_wire::output::OutputFormat;
use palisade_wire::Timestamp;

use super::incidents::when;
use super::{ago, finish_output, get, runtime, CliError, ClientArgs, Outcome};
use crate::api::situation::Situation;

/// `situation` flags.
#[derive(Debug, Args)]
pub struct SituationArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Length of the period the counts cover (compared with the period before it).
    #[arg(long, default_value = "1h")]
    pub period: String,
    /// Redraw in place until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 5)]
    pub interval_secs: u64,
    /// Stop after this many redraws (for scripts; 0 = until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub max_redraws: u64,
    /// Output format (json/ndjson print the raw picture once per redraw).
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Show times in local time instead of UTC.
    #[arg(long)]
    pub local_time: bool,
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of the last `width` points, scaled to their maximum.
pub fn sparkline(points: &[f64], width: usize) -> String {
    let tail = &points[points.len().saturating_sub(width)..];
    let max = tail.iter().copied().fold(0.0_f64, f64::max);
    tail.iter()
        .map(|&p| {
            if max <= 0.0 || p <= 0.0 {
                BARS[0]
            } else {
                let i = ((p / max) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

fn trend(now: u64, before: u64) -> String {
    if before == 0 {
        return if now == 0 { "=".into() } else { "new".into() };
    }
    let pct = (now as f64 - before as f64) * 100.0 / before as f64;
    if pct.abs() < 0.5 {
        "=".into()
    } else {
        format!("{pct:+.0}%")
    }
}

fn period_name(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Renders the screen.
pub fn render(s: &Situation, local: bool, width: usize) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let p = period_name(s.period_secs);
    let now = s.generated;
    let online = s.agents.iter().filter(|a| a.online).count();
    let _ = writeln!(
        o,
        "PALISADE SITUATION  {}   period {p} (trend vs the {p} before)",
        when(now, local)
    );
    let _ = writeln!(o, "{}", "─".repeat(width.min(100)));
    let _ = writeln!(
        o,
        "agents {online} online / {} offline    events {:.0}/s    detector alerts {} ({})    rule alerts {} ({})",
        s.agents.len() - online,
        s.events_per_sec,
        s.alert_events,
        trend(s.alert_events, s.alert_events_previous),
        s.alerts,
        trend(s.alerts, s.alerts_previous)
    );
    let open: u64 = s.open_incidents.values().sum();
    let sev = |k: &str| s.open_incidents.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        o,
        "open incidents {open} ({} new): critical {}  high {}  medium {}  low {}  info {}",
        s.new_incidents,
        sev("critical"),
        sev("high"),
        sev("medium"),
        sev("low"),
        sev("info")
    );
    let _ = writeln!(o, "\nSEGMENTS (agent)      STATE    LAST SEEN  SPOOL-DROP CAPT-DROP  EVENTS/S (1h)                     ALERTS/MIN");
    for a in &s.agents {
        let series = s.segments.get(&a.id);
        let ev = series
            .map(|x| sparkline(&x.events_per_sec, 30))
            .unwrap_or_default();
        let al = series
            .map(|x| sparkline(&x.alerts_per_min, 20))
            .unwrap_or_default();
        let last_rate = series
            .and_then(|x| x.events_per_sec.last().copied())
            .unwrap_or(0.0);
        let _ = writeln!(
            o,
            "  {:<19} {:<8} {:<10} {:>10} {:>9}  {ev:<30} {last_rate:>6.0}  {al}",
            a.id,
            if a.online { "online" } else { "OFFLINE" },
            ago(now, a.last_seen),
            a.spool_dropped,
            a.capture_dropped
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    let col = |title: &str, items: &[crate::api::situation::Top]| -> Vec<String> {
        let mut v = vec![title.to_string()];
        v.extend(
            items
                .iter()
                .take(5)
                .map(|t| format!("{:<22} {:>6}", short(&t.name, 22), t.count)),
        );
        v
    };
    let a = col("TOP ATTACKED", &s.top_attacked);
    let b = col("TOP SOURCES", &s.top_sources);
    let c = col("TOP DETECTORS", &s.top_detectors);
    let _ = writeln!(o);
    for i in 0..a.len().max(b.len()).max(c.len()) {
        let g = |v: &Vec<String>| v.get(i).cloned().unwrap_or_default();
        let _ = writeln!(o, "  {:<30} {:<30} {}", g(&a), g(&b), g(&c));
    }
    let _ = writeln!(
        o,
        "\nINTEGRITY              CHANGES RESTORED MALWARE  LAST FINDING"
    );
    if s.integrity.is_empty() {
        let _ = writeln!(o, "  (no host reports file integrity)");
    }
    for l in &s.integrity {
        let state = if l.changes + l.malware > l.restored {
            "!"
        } else {
            " "
        };
        let _ = writeln!(
            o,
            "{state} {:<20} {:>7} {:>8} {:>7}  {}",
            l.host,
            l.changes,
            l.restored,
            l.malware,
            l.last
                .map(|t| ago(now, t))
                .unwrap_or_else(|| "clean".into())
        );
    }
    let _ = writeln!(o, "\nREPLICATION / BACKUP   LAST REPORT");
    if s.replication.is_empty() {
        let _ = writeln!(o, "  (no replicator has reported in 30 days)");
    }
    for r in &s.replication {
        let stale = r.age_secs > 86_400 || r.severity >= palisade_wire::Severity::High;
        let _ = writeln!(
            o,
            "{} {:<20} {}  {}",
            if stale { "!" } else { " " },
            r.source,
            ago(now, r.last),
            r.message.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(o, "\nDR DRILLS              LAST RUN");
    if s.drills.is_empty() {
        let _ = writeln!(o, "  (no drill in 30 days)");
    }
    for d in &s.drills {
        let bad = d.severity >= palisade_wire::Severity::Medium;
        let _ = writeln!(
            o,
            "{} {:<20} {}  {}",
            if bad { "!" } else { " " },
            d.source,
            ago(now, d.last),
            d.message.as_deref().unwrap_or("")
        );
    }
    o
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Runs `situation`.
pub fn run(args: SituationArgs) -> Result<Outcome, CliError> {
    let rt = runtime()?;
    let mut client = args.client.client()?;
    let path = format!("/v1/situation?period={}", args.period);
    let tty = std::io::stdout().is_terminal();
    let mut redraws = 0u64;
    loop {
        let body = rt.block_on(get(&mut client, &path))?;
        let mut out = std::io::stdout().lock();
        let written = match args.output_format {
            OutputFormat::Json | OutputFormat::Ndjson => {
                out.write_all(&body).and_then(|_| writeln!(out))
            }
            OutputFormat::Text => {
                let s: Situation = serde_json::from_slice(&body)
                    .map_err(|e| CliError::Usage(format!("unreadable situation: {e}")))?;
                let screen = render(&s, args.local_time, 100);
                if args.watch && tty {
                    // Home + clear: redraw in place.
                    write!(out, "\x1b[H\x1b[2J{screen}").and_then(|_| out.flush())
                } else {
                    write!(out, "{screen}").and_then(|_| out.flush())
                }
            }
        };
        finish_output(written)?;
        redraws += 1;
        if !args.watch || (args.max_redraws > 0 && redraws >= args.max_redraws) {
            return Ok(Outcome::Found);
        }
        let stop = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(args.interval_secs.max(1))) => false,
                _ = super::shutdown_signal() => true,
            }
        });
        if stop {
            return Ok(Outcome::Found);
        }
        let _ = Timestamp::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0], 10), "▁▃▅█");
        assert_eq!(sparkline(&[5.0; 40], 3), "███");
        assert_eq!(sparkline(&[], 3), "");
    }

    #[test]
    fn trends_read_as_percentages() {
        assert_eq!(trend(150, 100), "+50%");
        assert_eq!(trend(0, 0), "=");
        assert_eq!(trend(3, 0), "new");
    }
}
