//! `alerts`, `incidents`, `incident show`, `ack`, `resolve`, `rules`: the analyst's and the
//! security-admin's commands over correlation results.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use palisade_wire::output::OutputFormat;
use palisade_wire::{Severity, Timestamp};

use super::{finish_output, get, post, runtime, CliError, ClientArgs, Outcome};
use crate::correlate::testing;
use crate::correlate::RulesStatus;
use crate::incidents::{Alert, Incident};

/// Formats a time in UTC (RFC 3339, seconds) or in the machine's local zone.
pub(crate) fn when(t: Timestamp, local: bool) -> String {
    let secs = t.nanos().div_euclid(1_000_000_000);
    let Some(utc) = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0) else {
        return t.to_string();
    };
    if local {
        utc.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    } else {
        utc.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// Time display flag shared by listings.
#[derive(Debug, Args, Clone, Copy)]
pub struct TimeArgs {
    /// Show times in this machine's local time zone instead of UTC.
    #[arg(long)]
    pub local_time: bool,
}

/// `alerts` flags.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Alerts whose event time is at or after: a duration ago (15m, 2h, 7d) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only alerts before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this severity or higher.
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Only this rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only alerts of this incident (INC-n).
    #[arg(long)]
    pub incident: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Times.
    #[command(flatten)]
    pub time: TimeArgs,
}

/// `incidents` flags.
#[derive(Debug, Args)]
pub struct IncidentsArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Status filter: open (new + acknowledged, the default), new, acknowledged, resolved, all.
    #[arg(long, default_value = "open")]
    pub status: String,
    /// Only this severity or higher.
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Only incidents with an alert at or after this time.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many, most recent first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Times.
    #[command(flatten)]
    pub time: TimeArgs,
}

/// `incident` subcommands.
#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// One incident with its timeline and the alerts and events behind it.
    #[command(
        after_long_help = "Examples:\n  palisade-collector incident show INC-3\n  palisade-collector incident show 3 --output-format json --local-time"
    )]
    Show {
        /// Incident id (INC-n or n).
        id: String,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
        /// Times.
        #[command(flatten)]
        time: TimeArgs,
    },
}

/// `ack` / `resolve` flags.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Incident id (INC-n or n).
    pub id: String,
    /// Why (kept on the incident's timeline and in the audit log).
    #[arg(long)]
    pub comment: Option<String>,
    /// Connection (needs a security-admin certificate).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
}

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Run every rule's test cases (`<dir>/tests/*.yml`) offline; fails on a miss or a rule
    /// without cases.
    #[command(
        after_long_help = "Examples:\n  palisade-collector rules test --dir signatures/sigma\n  palisade-collector rules test --dir signatures/sigma --output-format json\n\nExit codes: 0 all cases pass and every rule has must-fire and must-not-fire cases, 1 a case failed or a rule is uncovered, 2 the rules or cases do not load."
    )]
    Test {
        /// Rule directory.
        #[arg(long, default_value = "signatures/sigma")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// Parse and check a rule directory offline (what a reload would accept).
    #[command(
        after_long_help = "Examples:\n  palisade-collector rules check --dir signatures/sigma"
    )]
    Check {
        /// Rule directory.
        #[arg(long, default_value = "signatures/sigma")]
        dir: PathBuf,
    },
    /// The rules the running collector has loaded, and its latest refused reload.
    #[command(
        after_long_help = "Examples:\n  palisade-collector rules list --pki-dir pki --as analyst"
    )]
    List {
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// Make the running collector re-read its rule directory now (security-admin).
    #[command(
        after_long_help = "Examples:\n  palisade-collector rules reload --pki-dir pki --as security-admin"
    )]
    Reload {
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn lines(body: &[u8]) -> Vec<&[u8]> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// Writes an NDJSON body as json/ndjson, or each parsed item through `text`.
fn write_list<T: serde::de::DeserializeOwned>(
    body: &[u8],
    format: OutputFormat,
    header: &str,
    text: impl Fn(&T) -> String,
) -> Result<Outcome, CliError> {
    let items = lines(body);
    let mut out = std::io::stdout().lock();
    let written = (|| -> std::io::Result<()> {
        match format {
            OutputFormat::Ndjson => {
                for l in &items {
                    out.write_all(l)?;
                    out.write_all(b"\n")?;
                }
            }
            OutputFormat::Json => {
                out.write_all(b"[")?;
                for (i, l) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",\n")?;
                    }
                    out.write_all(l)?;
                }
                out.write_all(b"]\n")?;
            }
            OutputFormat::Text => {
                if !items.is_empty() {
                    writeln!(out, "{header}")?;
                }
                for l in &items {
                    match serde_json::from_slice::<T>(l) {
                        Ok(v) => writeln!(out, "{}", text(&v))?,
                        Err(e) => writeln!(out, "(unreadable item: {e})")?,
                    }
                }
            }
        }
        Ok(())
    })();
    finish_output(written)?;
    Ok(if items.is_empty() {
        Outcome::NothingFound
    } else {
        Outcome::Found
    })
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let cut: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn entity_text(a: &crate::incidents::Entities) -> String {
    let mut v: Vec<String> = a.ips.iter().cloned().collect();
    v.extend(a.users.iter().map(|u| format!("user:{u}")));
    v.extend(a.hosts.iter().map(|h| format!("host:{h}")));
    short(&v.join(" "), 40)
}

/// `alerts`.
pub fn alerts(args: AlertsArgs) -> Result<Outcome, CliError> {
    let mut q = format!("since={}&limit={}", encode(&args.since), args.limit);
    if let Some(u) = &args.until {
        q.push_str(&format!("&until={}", encode(u)));
    }
    if let Some(s) = args.severity {
        q.push_str(&format!("&severity={}", s.name()));
    }
    if let Some(r) = &args.rule {
        q.push_str(&format!("&rule={}", encode(r)));
    }
    if let Some(i) = &args.incident {
        q.push_str(&format!("&incident={}", encode(i)));
    }
    let body = runtime()?.block_on(async {
        let mut c = args.client.client()?;
        get(&mut c, &format!("/v1/alerts?{q}")).await
    })?;
    let local = args.time.local_time;
    write_list::<Alert>(
        &body,
        args.output_format,
        &format!(
            "{:<8} {:<20} {:<8} {:<9} {:<14} {:<34} {}",
            "ALERT", "TIME", "SEVERITY", "INCIDENT", "KIND", "RULE", "ENTITIES"
        ),
        |a| {
            format!(
                "{:<8} {:<20} {:<8} {:<9} {:<14} {:<34} {}",
                a.id,
                when(a.timestamp, local),
                a.severity.name(),
                format!("INC-{}", a.incident),
                a.kind,
                short(&a.rule_title, 34),
                entity_text(&a.entities)
            )
        },
    )
}

/// `incidents`.
pub fn incidents(args: IncidentsArgs) -> Result<Outcome, CliError> {
    let mut q = format!("limit={}", args.limit);
    if args.status != "all" {
        q.push_str(&format!("&status={}", encode(&args.status)));
    }
    if let Some(s) = args.severity {
        q.push_str(&format!("&severity={}", s.name()));
    }
    if let Some(s) = &args.since {
        q.push_str(&format!("&since={}", encode(s)));
    }
    let body = runtime()?.block_on(async {
        let mut c = args.client.client()?;
        get(&mut c, &format!("/v1/incidents?{q}")).await
    })?;
    let local = args.time.local_time;
    write_list::<Incident>(
        &body,
        args.output_format,
        &format!(
            "{:<9} {:<8} {:<12} {:>6} {:<20} {:<20} {}",
            "INCIDENT", "SEVERITY", "STATUS", "ALERTS", "FIRST SEEN", "LAST SEEN", "TITLE"
        ),
        |i| {
            format!(
                "{:<9} {:<8} {:<12} {:>6} {:<20} {:<20} {}",
                i.label(),
                i.severity.name(),
                i.status.name(),
                i.alerts,
                when(i.first_seen, local),
                when(i.last_seen, local),
                short(&i.title, 60)
            )
        },
    )
}

#[derive(serde::Deserialize)]
struct Shown {
    incident: Incident,
    alerts: Vec<Alert>,
}

fn write_incident(out: &mut impl Write, s: &Shown, local: bool) -> std::io::Result<()> {
    let i = &s.incident;
    writeln!(out, "{}  {}", i.label(), i.title)?;
    writeln!(out, "  severity    {}", i.severity.name())?;
    writeln!(out, "  status      {}", i.status.name())?;
    writeln!(out, "  rule        {}", i.rule_id)?;
    writeln!(
        out,
        "  seen        {} .. {}  ({} alerts)",
        when(i.first_seen, local),
        when(i.last_seen, local),
        i.alerts
    )?;
    if !i.entities.hosts.is_empty() {
        writeln!(
            out,
            "  hosts       {}",
            i.entities
                .hosts
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if !i.entities.ips.is_empty() {
        writeln!(
            out,
            "  addresses   {}",
            i.entities
                .ips
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if !i.entities.users.is_empty() {
        writeln!(
            out,
            "  users       {}",
            i.entities
                .users
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(out, "\nTimeline")?;
    for t in &i.timeline {
        let who =
            t.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
        let alert = t.alert.map(|a| format!(" #{a}")).unwrap_or_default();
        writeln!(
            out,
            "  {}  {}{alert}{who}{}",
            when(t.timestamp, local),
            t.what,
            t.text
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        )?;
    }
    if i.timeline_dropped > 0 {
        writeln!(
            out,
            "  … {} more alerts not on the timeline",
            i.timeline_dropped
        )?;
    }
    writeln!(out, "\nAlerts and the events behind them")?;
    for a in &s.alerts {
        writeln!(
            out,
            "  #{} {}  {} [{}] {}",
            a.id,
            when(a.timestamp, local),
            a.severity.name(),
            a.kind,
            a.rule_title
        )?;
        if !a.group.is_empty() {
            let g: Vec<String> = a.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                out,
                "      group {}{}",
                g.join(" "),
                a.value.map(|v| format!("  value {v}")).unwrap_or_default()
            )?;
        }
        for e in &a.events {
            writeln!(
                out,
                "      event {}  {}{}{}",
                when(e.timestamp, local),
                e.agent
                    .as_deref()
                    .map(|ag| format!("{ag}#{} ", e.sequence.unwrap_or(0)))
                    .unwrap_or_default(),
                e.summary.as_deref().unwrap_or(""),
                if e.id.is_empty() {
                    String::new()
                } else {
                    format!("  (id {})", short(&e.id, 16))
                }
            )?;
        }
    }
    Ok(())
}

/// `incident show`.
pub fn incident(cmd: IncidentCommand) -> Result<Outcome, CliError> {
    let IncidentCommand::Show {
        id,
        client,
        output_format,
        time,
    } = cmd;
    let body = runtime()?.block_on(async {
        let mut c = client.client()?;
        get(&mut c, &format!("/v1/incidents/{}", encode(&id))).await
    })?;
    let mut out = std::io::stdout().lock();
    let written = match output_format {
        OutputFormat::Json | OutputFormat::Ndjson => {
            out.write_all(&body).and_then(|_| writeln!(out))
        }
        OutputFormat::Text => {
            let shown: Shown = serde_json::from_slice(&body)
                .map_err(|e| CliError::Usage(format!("unreadable incident: {e}")))?;
            write_incident(&mut out, &shown, time.local_time)
        }
    };
    finish_output(written)?;
    Ok(Outcome::Found)
}

/// `ack` and `resolve`.
pub fn act(args: ActionArgs, resolve: bool) -> Result<Outcome, CliError> {
    let verb = if resolve { "resolve" } else { "ack" };
    let body = serde_json::json!({ "comment": args.comment });
    let answer = runtime()?.block_on(async {
        let mut c = args.client.client()?;
        post(
            &mut c,
            &format!("/v1/incidents/{}/{verb}", encode(&args.id)),
            &body,
        )
        .await
    })?;
    let mut out = std::io::stdout().lock();
    let written = match args.output_format {
        OutputFormat::Json | OutputFormat::Ndjson => {
            out.write_all(&answer).and_then(|_| writeln!(out))
        }
        OutputFormat::Text => match serde_json::from_slice::<Incident>(&answer) {
            Ok(i) => writeln!(out, "{} is now {}", i.label(), i.status.name()),
            Err(_) => out.write_all(&answer).and_then(|_| writeln!(out)),
        },
    };
    finish_output(written)?;
    Ok(Outcome::Found)
}

/// `rules …`.
pub fn rules(cmd: RulesCommand) -> Result<Outcome, CliError> {
    match cmd {
        RulesCommand::Check { dir } => {
            let set = crate::correlate::rules::RuleSet::load_dir(&dir)
                .map_err(|e| CliError::Usage(format!("rule set refused: {e}")))?;
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            let corr = set.rules.iter().filter(|r| r.kind != "detection").count();
            println!(
                "{}: {} rules ({} detection, {corr} correlation): ok",
                dir.display(),
                set.rules.len(),
                set.rules.len() - corr
            );
            Ok(Outcome::Found)
        }
        RulesCommand::Test { dir, output_format } => {
            let report = testing::run(&dir)
                .map_err(|e| CliError::Usage(format!("rule set refused: {e}")))?;
            let mut out = std::io::stdout().lock();
            let written = match output_format {
                OutputFormat::Json | OutputFormat::Ndjson => {
                    serde_json::to_writer_pretty(&mut out, &report)
                        .map_err(std::io::Error::from)
                        .and_then(|_| writeln!(out))
                }
                OutputFormat::Text => (|| {
                    for c in &report.cases {
                        let mark = if c.passed { "ok  " } else { "FAIL" };
                        writeln!(
                            out,
                            "{mark} {}: {}",
                            c.file
                                .file_name()
                                .map(|f| f.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                            c.name
                        )?;
                        for m in &c.missing {
                            writeln!(out, "       expected {m} to fire; it did not")?;
                        }
                        for u in &c.unexpected {
                            writeln!(out, "       {u} fired; it must not")?;
                        }
                    }
                    for r in &report.without_fire_case {
                        writeln!(out, "UNCOVERED {r}: no case expects it to fire")?;
                    }
                    for r in &report.without_not_fire_case {
                        writeln!(out, "UNCOVERED {r}: no case expects it not to fire")?;
                    }
                    for e in &report.errors {
                        writeln!(out, "ERROR {e}")?;
                    }
                    let passed = report.cases.iter().filter(|c| c.passed).count();
                    writeln!(
                        out,
                        "{} rules, {} cases, {passed} passed, {} failed",
                        report.rules,
                        report.cases.len(),
                        report.cases.len() - passed
                    )
                })(),
            };
            finish_output(written)?;
            if !report.errors.is_empty() {
                return Err(CliError::Usage(format!(
                    "{} test file problem(s)",
                    report.errors.len()
                )));
            }
            Ok(if report.ok() {
                Outcome::Found
            } else {
                Outcome::NothingFound
            })
        }
        RulesCommand::List {
            client,
            output_format,
        } => {
            let body = runtime()?.block_on(async {
                let mut c = client.client()?;
                get(&mut c, "/v1/rules").await
            })?;
            let status: RulesStatus = serde_json::from_slice(&body)
                .map_err(|e| CliError::Usage(format!("unreadable rules status: {e}")))?;
            let mut out = std::io::stdout().lock();
            let written = match output_format {
                OutputFormat::Json => out.write_all(&body).and_then(|_| writeln!(out)),
                OutputFormat::Ndjson => status.rules.iter().try_for_each(|r| {
                    serde_json::to_writer(&mut out, r).map_err(std::io::Error::from)?;
                    writeln!(out)
                }),
                OutputFormat::Text => (|| {
                    writeln!(out, "{:<40} {:<16} {:<13} TITLE", "RULE", "KIND", "LEVEL")?;
                    for r in &status.rules {
                        writeln!(
                            out,
                            "{:<40} {:<16} {:<13} {}",
                            short(&r.id, 40),
                            r.kind,
                            r.level,
                            r.title
                        )?;
                    }
                    if let Some(e) = &status.last_error {
                        writeln!(out, "\nlatest reload REFUSED (previous set active): {e}")?;
                    }
                    Ok(())
                })(),
            };
            finish_output(written)?;
            Ok(if status.rules.is_empty() {
                Outcome::NothingFound
            } else {
                Outcome::Found
            })
        }
        RulesCommand::Reload { client } => {
            let body = runtime()?.block_on(async {
                let mut c = client.client()?;
                post(&mut c, "/v1/rules/reload", &serde_json::json!({})).await
            })?;
            let status: RulesStatus = serde_json::from_slice(&body)
                .map_err(|e| CliError::Usage(format!("unreadable rules status: {e}")))?;
            println!("reloaded: {} rules active", status.rules.len());
            Ok(Outcome::Found)
        }
    }
}
