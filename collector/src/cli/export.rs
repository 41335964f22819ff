//! `palisade-collector export`: every matching event of a window, oldest first, as ECS NDJSON.
//! It pages through `GET /v1/events` with the `after=` cursor (the key of the previous page's
//! last event), so neither process ever holds more than one page, whatever the window holds.
//! A file is written atomically (temporary file, fsync, rename): a reader never sees half an
//! export, and a failed export leaves no file behind.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use palisade_wire::event::parse_time_spec;
use palisade_wire::Timestamp;

use super::{finish_output, get, human_bytes, CliError, ClientArgs, Outcome};
use crate::query::{url_encode, EventKey};

pub(crate) const EXAMPLES: &str = "Examples:
  palisade-collector export --since 30d --output events.ndjson
  palisade-collector export --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z --filter 'event.dataset = palisade.alert' --output alerts.ndjson
  palisade-collector export --since 1h | gzip > last-hour.ndjson.gz

Exit codes: 0 events exported, 1 none matched (the file is still written), 2 error.";

/// `export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format; `ecs-ndjson` (one stored ECS document per line) is the only one.
    #[arg(long, default_value = "ecs-ndjson")]
    pub format: String,
    /// Start of the window: a duration ago (15m, 2h, 30d) or an RFC 3339 time.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// End of the window (exclusive), same forms; default now (fixed when the export starts).
    #[arg(long)]
    pub until: Option<String>,
    /// Filter expression, e.g. 'source.ip in 10.0.0.0/8 and event.severity >= 4'.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Events per request.
    #[arg(long, default_value_t = 5000)]
    pub page_size: usize,
}

/// Where the export goes: stdout, or a temporary file renamed into place at the end.
enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        out: BufWriter<File>,
        temp: PathBuf,
        path: PathBuf,
    },
}

impl Sink {
    fn open(path: Option<&Path>) -> Result<Sink, CliError> {
        let Some(path) = path else {
            return Ok(Sink::Stdout(BufWriter::new(std::io::stdout())));
        };
        let name = path.file_name().ok_or_else(|| {
            CliError::Usage(format!("--output {} is not a file name", path.display()))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{}", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", temp.display())))?;
        Ok(Sink::File {
            out: BufWriter::new(file),
            temp,
            path: path.to_path_buf(),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File { out, .. } => out,
        }
    }

    /// Flushes and, for a file, makes it durable and moves it into place.
    fn commit(self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush(),
            Sink::File { out, temp, path } => {
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                drop(file);
                std::fs::rename(&temp, &path)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir).and_then(|d| d.sync_all()).ok();
                }
                Ok(())
            }
        }
    }

    /// Removes the temporary file of a failed export.
    fn abandon(self) {
        if let Sink::File { out, temp, .. } = self {
            drop(out);
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Runs `export`.
pub(crate) async fn run(args: ExportArgs) -> Result<Outcome, CliError> {
    if args.format != "ecs-ndjson" {
        return Err(CliError::Usage(format!(
            "--format {:?}: only ecs-ndjson is supported",
            args.format
        )));
    }
    if args.page_size == 0 || args.page_size > crate::api::MAX_EVENTS_PER_QUERY {
        return Err(CliError::Usage(format!(
            "--page-size must be between 1 and {}",
            crate::api::MAX_EVENTS_PER_QUERY
        )));
    }
    let now = Timestamp::now();
    let since = parse_time_spec(&args.since, now).map_err(CliError::Usage)?;
    let until = match &args.until {
        Some(u) => parse_time_spec(u, now).map_err(CliError::Usage)?,
        None => now,
    };
    let mut base = format!(
        "/v1/events?since={since}&until={until}&order=asc&limit={}",
        args.page_size
    );
    if let Some(f) = &args.filter {
        base.push_str(&super::follow::filter_param(f)?);
    }
    let mut client = args.client.client()?;
    let mut sink = Sink::open(args.output.as_deref())?;
    let result = pages(&mut client, &base, args.page_size, sink.writer()).await;
    let (events, bytes) = match result {
        Ok(counts) => counts,
        Err(e) => {
            sink.abandon();
            return match e {
                // `| head`: the reader has what it wanted.
                CliError::Output(io) if palisade_wire::output::is_broken_pipe(&io) => {
                    Ok(Outcome::Found)
                }
                other => Err(other),
            };
        }
    };
    let target = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    finish_output(sink.commit())?;
    eprintln!(
        "exported {events} events ({}, {bytes} bytes) to {target}",
        human_bytes(bytes)
    );
    Ok(if events > 0 {
        Outcome::Found
    } else {
        Outcome::NothingFound
    })
}

/// Fetches page after page and writes each event line; returns (events, bytes written).
async fn pages(
    client: &mut palisade_wire::client::Client,
    base: &str,
    page_size: usize,
    out: &mut dyn Write,
) -> Result<(u64, u64), CliError> {
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut after: Option<EventKey> = None;
    loop {
        let path = match &after {
            Some(k) => format!("{base}&after={}", url_encode(&k.to_string())),
            None => base.to_string(),
        };
        let body = get(client, &path).await?;
        let mut n = 0usize;
        let mut last: Option<&[u8]> = None;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            out.write_all(line)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(CliError::Output)?;
            n += 1;
            bytes += line.len() as u64 + 1;
            last = Some(line);
        }
        events += n as u64;
        if n < page_size {
            return Ok((events, bytes));
        }
        let next = last
            .and_then(EventKey::of_json)
            .ok_or_else(|| CliError::Api {
                status: hyper::StatusCode::OK,
                message: "a stored event lacks @timestamp, agent.id or event.sequence; cannot page"
                    .into(),
            })?;
        if after.as_ref().is_some_and(|a| *a >= next) {
            return Err(CliError::Api {
                status: hyper::StatusCode::OK,
                message: format!("paging did not advance past {next}"),
            });
        }
        after = Some(next);
    }
}
