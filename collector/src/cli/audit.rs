//! `palisade-collector audit log|verify`: read the audit log and check its hash chain, either
//! offline from the files (what an assessor runs, no collector needed) or through the API
//! (`GET /v1/audit`, `GET /v1/audit/verify`, audit-admin certificate only).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use hyper::StatusCode;
use palisade_wire::event::parse_time_spec;
use palisade_wire::output::OutputFormat;
use palisade_wire::Timestamp;

use super::{finish_output, get, runtime, CliError, ClientArgs, Outcome};
use crate::audit::query::{self, AuditQuery};
use crate::audit::{Finding, Record, Report};
use crate::config::CollectorConfig;

const LOG_HELP: &str = "Examples:
  palisade-collector audit log --pki-dir pki --as audit-admin --since 1h
  palisade-collector audit log --pki-dir pki --as audit-admin --identity analyst --output-format ndjson
  palisade-collector audit log --data-dir /var/lib/palisade/collector --since 7d --role security-admin

Reads through the API (audit-admin only) unless --data-dir or --config is given, then from the files.
Exit codes: 0 records listed, 1 none matched, 2 error.";

const VERIFY_HELP: &str = "Examples:
  palisade-collector audit verify --data-dir /var/lib/palisade/collector
  palisade-collector audit verify --config /etc/palisade/collector.toml --output-format json
  palisade-collector audit verify --remote --pki-dir pki --as audit-admin

Checks every record's blake3 hash and its link to the one before, across all day files, and the
chain against audit/anchors.ndjson; names the file, line and seq of every edited, deleted,
inserted or reordered record, deleted day file and cut-off tail.
Exit codes: 0 intact, 1 tampering found, 2 error (unreadable files, bad arguments).";

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records (newest first).
    #[command(after_long_help = LOG_HELP)]
    Log(LogArgs),
    /// Check the audit log's hash chain and anchors for tampering.
    #[command(after_long_help = VERIFY_HELP)]
    Verify(VerifyArgs),
}

/// Where the files are, for offline use.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// The collector's data directory (`audit` reads its `audit/`, and also takes a copy of an
    /// audit directory here; `migrate-incidents` converts its `incidents/`).
    #[arg(long, conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// The collector's config file; its `data_dir` is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl FilesArgs {
    /// The data directory named, or the config's, with the config when it was named instead
    /// (loaded once, for what else the caller needs from it).
    pub(crate) fn data_dir(&self) -> Result<(PathBuf, Option<CollectorConfig>), CliError> {
        match (&self.data_dir, &self.config) {
            (Some(d), _) => Ok((d.clone(), None)),
            (None, Some(c)) => {
                let config = CollectorConfig::load(c)?;
                Ok((config.data_dir.clone(), Some(config)))
            }
            (None, None) => Err(CliError::Usage(
                "name the data directory (--data-dir) or the config file (--config)".into(),
            )),
        }
    }

    fn audit_dir(&self) -> Result<Option<PathBuf>, CliError> {
        if self.data_dir.is_none() && self.config.is_none() {
            return Ok(None);
        }
        let (data_dir, _) = self.data_dir()?;
        let sub = data_dir.join("audit");
        Ok(Some(if sub.is_dir() { sub } else { data_dir }))
    }
}

/// `audit log` flags.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Connection (when reading through the API).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read the files instead of the API.
    #[command(flatten)]
    pub files: FilesArgs,
    /// Start of the window: a duration ago (15m, 2h, 7d) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// End of the window (exclusive), same forms; default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this identity (certificate CN).
    #[arg(long = "identity")]
    pub who: Option<String>,
    /// Only this role (agent, analyst, security-admin, audit-admin, system-admin, …).
    #[arg(long)]
    pub role: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Oldest first.
    #[arg(long)]
    pub oldest_first: bool,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
}

/// `audit verify` flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read the files (the default when --remote is not given).
    #[command(flatten)]
    pub files: FilesArgs,
    /// Ask the collector's API instead of reading files.
    #[arg(long, conflicts_with_all = ["data_dir", "config"])]
    pub remote: bool,
    /// Connection (with --remote).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
}

/// Runs an `audit` subcommand.
pub fn run(cmd: AuditCommand) -> Result<Outcome, CliError> {
    match cmd {
        AuditCommand::Log(args) => log(args),
        AuditCommand::Verify(args) => verify(args),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn log(args: LogArgs) -> Result<Outcome, CliError> {
    let now = Timestamp::now();
    let since = parse_time_spec(&args.since, now).map_err(CliError::Usage)?;
    let until = match &args.until {
        Some(u) => parse_time_spec(u, now).map_err(CliError::Usage)?,
        None => Timestamp(i64::MAX),
    };
    if args.limit > query::MAX_LIMIT {
        return Err(CliError::Usage(format!(
            "--limit {} is above the maximum {}",
            args.limit,
            query::MAX_LIMIT
        )));
    }
    let lines: Vec<Vec<u8>> = match args.files.audit_dir()? {
        Some(dir) => {
            let q = AuditQuery {
                since,
                until,
                identity: args.who.clone(),
                role: args.role.clone(),
                limit: args.limit,
                newest_first: !args.oldest_first,
            };
            query::list(&dir, &q).map_err(|e| CliError::Usage(e.to_string()))?
        }
        None => {
            let mut qs = format!("since={since}&limit={}", args.limit);
            if until.0 != i64::MAX {
                qs.push_str(&format!("&until={until}"));
            }
            if let Some(i) = &args.who {
                qs.push_str(&format!("&identity={}", percent_encode(i)));
            }
            if let Some(r) = &args.role {
                qs.push_str(&format!("&role={}", percent_encode(r)));
            }
            qs.push_str(if args.oldest_first {
                "&order=asc"
            } else {
                "&order=desc"
            });
            let mut client = args.client.client()?;
            let body = runtime()?.block_on(get(&mut client, &format!("/v1/audit?{qs}")))?;
            body.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        }
    };
    let mut out = std::io::stdout().lock();
    finish_output(write_log(&mut out, &lines, args.output_format))?;
    Ok(if lines.is_empty() {
        Outcome::NothingFound
    } else {
        Outcome::Found
    })
}

fn write_log(out: &mut impl Write, lines: &[Vec<u8>], format: OutputFormat) -> std::io::Result<()> {
    match format {
        OutputFormat::Ndjson => {
            for l in lines {
                out.write_all(l)?;
                writeln!(out)?;
            }
        }
        OutputFormat::Json => {
            write!(out, "[")?;
            for (i, l) in lines.iter().enumerate() {
                if i > 0 {
                    write!(out, ",")?;
                }
                out.write_all(l)?;
            }
            writeln!(out, "]")?;
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "{:<24} {:>8} {:<18} {:<15} {:<22} {:>6}  REQUEST",
                "TIME", "SEQ", "IDENTITY", "ROLE", "PEER", "RESULT"
            )?;
            for l in lines {
                match serde_json::from_slice::<Record>(l) {
                    Ok(r) => {
                        let ts = r.time.to_string();
                        let short = match ts.get(..23) {
                            Some(head) => format!("{head}Z"),
                            None => ts,
                        };
                        let mut request = format!("{} {}", r.method, r.path);
                        if !r.action.is_null() {
                            request.push_str(&format!("  action={}", r.action));
                        }
                        writeln!(
                            out,
                            "{:<24} {:>8} {:<18} {:<15} {:<22} {:>6}  {request}",
                            short, r.seq, r.identity, r.role, r.peer, r.result
                        )?;
                    }
                    Err(_) => writeln!(out, "(unreadable record) {}", String::from_utf8_lossy(l))?,
                }
            }
        }
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<Outcome, CliError> {
    let report = if args.remote {
        let mut client = args.client.client()?;
        let body = runtime()?.block_on(get(&mut client, "/v1/audit/verify"))?;
        serde_json::from_slice::<Report>(&body).map_err(|e| CliError::Api {
            status: StatusCode::OK,
            message: format!("unreadable verification report: {e}"),
        })?
    } else {
        let dir = args.files.audit_dir()?.ok_or_else(|| {
            CliError::Usage("give --data-dir or --config (or --remote to ask the collector)".into())
        })?;
        crate::audit::verify(&dir).map_err(|e| CliError::Usage(e.to_string()))?
    };
    let mut out = std::io::stdout().lock();
    finish_output(write_report(&mut out, &report, args.output_format))?;
    // Exit 0 intact, 1 tampering found (Outcome's "nothing found" code).
    Ok(if report.intact {
        Outcome::Found
    } else {
        Outcome::NothingFound
    })
}

fn write_finding(out: &mut impl Write, f: &Finding) -> std::io::Result<()> {
    let at = match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.clone(),
        _ => "-".into(),
    };
    let seq = f.seq.map_or_else(|| "-".into(), |s| s.to_string());
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    writeln!(out, "  {at:<22} seq {seq:<10} {kind:<15} {}", f.message)
}

/// Prints a report as text, JSON or NDJSON (one line per finding and warning, with `level`).
pub fn write_report(out: &mut impl Write, r: &Report, format: OutputFormat) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, r).map_err(std::io::Error::from)?;
            writeln!(out)
        }
        OutputFormat::Ndjson => {
            for (level, list) in [("tampering", &r.findings), ("warning", &r.warnings)] {
                for f in list {
                    let mut v = serde_json::to_value(f).map_err(std::io::Error::from)?;
                    if let Some(o) = v.as_object_mut() {
                        o.insert("level".into(), level.into());
                    }
                    serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::from)?;
                    writeln!(out)?;
                }
            }
            Ok(())
        }
        OutputFormat::Text => {
            writeln!(out, "audit log   {}", r.dir.display())?;
            let span = match (r.files.first(), r.files.last()) {
                (Some(a), Some(b)) => format!("{} ({} .. {})", r.files.len(), a.file, b.file),
                _ => "none".into(),
            };
            writeln!(out, "day files   {span}")?;
            writeln!(
                out,
                "records     {} (chain head seq {}, hash {})",
                r.records, r.last_seq, r.last_hash
            )?;
            writeln!(out, "anchors     {}", r.anchors)?;
            if r.intact {
                writeln!(
                    out,
                    "result      INTACT: every record matches its hash and chain"
                )?;
            } else {
                writeln!(out, "result      TAMPERED: {} finding(s)", r.findings.len())?;
            }
            if !r.findings.is_empty() {
                writeln!(out, "\nFindings (file:line, seq, kind, what):")?;
                for f in &r.findings {
                    write_finding(out, f)?;
                }
            }
            if !r.warnings.is_empty() {
                writeln!(out, "\nWarnings (not tampering):")?;
                for f in &r.warnings {
                    write_finding(out, f)?;
                }
            }
            Ok(())
        }
    }
}
