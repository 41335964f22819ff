//! `--output-format text|json|ndjson` for every listing, shared by all three programs.
//! JSON is a streamed array, NDJSON one ECS document per line, text one aligned line per event.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use crate::event::Event;

/// How a listing is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned lines for people.
    #[default]
    Text,
    /// One JSON array.
    Json,
    /// One JSON document per line.
    Ndjson,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(OutputFormat::Text),
            "json" => Ok(OutputFormat::Json),
            "ndjson" => Ok(OutputFormat::Ndjson),
            _ => Err(format!(
                "unknown output format {s:?} (expected text, json or ndjson)"
            )),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Text => "text",
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
        })
    }
}

/// Whether an I/O error is the reader going away (`| head`), which ends a listing cleanly.
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// One text line for an event: time (ms, UTC), agent, kind, severity, summary.
pub fn text_line(e: &Event) -> String {
    text_line_in(e, false)
}

/// The same, with the time in this machine's local zone when `local` (`--local-time`).
pub fn text_line_in(e: &Event, local: bool) -> String {
    let short = if local {
        chrono::DateTime::from_timestamp_nanos(e.timestamp.nanos())
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S%.3f%:z")
            .to_string()
    } else {
        let ts = e.timestamp.to_string();
        // 2026-11-21T23:59:01.123456789Z -> 2026-11-21T23:59:01.123Z
        match (ts.get(..23), ts.ends_with('Z')) {
            (Some(head), true) => format!("{head}Z"),
            _ => ts,
        }
    };
    let mut summary = e.message.clone().unwrap_or_default();
    if let Some(rule) = e.rule.as_ref().and_then(|r| r.name.as_deref()) {
        summary = format!("[{rule}] {summary}");
    }
    let endpoints = match (&e.source, &e.destination) {
        (Some(s), Some(d)) => format!(
            " {}{} -> {}{}",
            s.ip.map(|i| i.to_string()).unwrap_or_default(),
            s.port.map(|p| format!(":{p}")).unwrap_or_default(),
            d.ip.map(|i| i.to_string()).unwrap_or_default(),
            d.port.map(|p| format!(":{p}")).unwrap_or_default(),
        ),
        _ => match &e.file {
            Some(f) if !summary.contains(&f.path) => format!(" {}", f.path),
            _ => String::new(),
        },
    };
    format!(
        "{short}  {:<16} {:<11} {:<8} {:>8}  {summary}{endpoints}",
        e.agent.id,
        e.kind().name(),
        e.event.severity.name(),
        e.event.sequence,
    )
}

/// Streams events to `out` in a format. Call [`EventWriter::finish`] at the end.
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    out: W,
    format: OutputFormat,
    count: usize,
    local: bool,
}

impl<W: Write> EventWriter<W> {
    /// A writer; prints the text header now.
    pub fn new(mut out: W, format: OutputFormat) -> io::Result<Self> {
        if format == OutputFormat::Text {
            writeln!(
                out,
                "{:<24}  {:<16} {:<11} {:<8} {:>8}  MESSAGE",
                "TIME", "AGENT", "KIND", "SEVERITY", "SEQ"
            )?;
        }
        Ok(EventWriter {
            out,
            format,
            count: 0,
            local: false,
        })
    }

    /// Text times in this machine's local zone instead of UTC (JSON keeps RFC 3339 UTC).
    pub fn local_time(mut self, local: bool) -> Self {
        self.local = local;
        self
    }

    /// Writes one event given as stored JSON (re-parsed only for text).
    pub fn write_raw(&mut self, json: &[u8]) -> io::Result<()> {
        match self.format {
            OutputFormat::Ndjson => {
                self.out.write_all(json)?;
                self.out.write_all(b"\n")?;
            }
            OutputFormat::Json => {
                self.out
                    .write_all(if self.count == 0 { b"[\n" } else { b",\n" })?;
                self.out.write_all(json)?;
            }
            OutputFormat::Text => match serde_json::from_slice::<Event>(json) {
                Ok(e) => writeln!(self.out, "{}", text_line_in(&e, self.local))?,
                Err(err) => writeln!(self.out, "(unparseable event: {err})")?,
            },
        }
        self.count += 1;
        Ok(())
    }

    /// Writes one event.
    pub fn write_event(&mut self, e: &Event) -> io::Result<()> {
        self.write_raw(&e.to_json())
    }

    /// Closes the JSON array, flushes, and returns how many events were written.
    pub fn finish(mut self) -> io::Result<usize> {
        if self.format == OutputFormat::Json {
            self.out
                .write_all(if self.count == 0 { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()?;
        Ok(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Severity};

    #[test]
    fn text_times_are_utc_unless_local_is_asked() {
        let mut e = Event::new("a", EventKind::Heartbeat, Severity::Info);
        e.timestamp = "2026-11-21T23:59:01.123456789Z".parse().unwrap();
        assert!(text_line(&e).starts_with("2026-11-21T23:59:01.123Z "));
        let local = text_line_in(&e, true);
        let stamp = local.split("  ").next().unwrap();
        // YYYY-MM-DD HH:MM:SS.mmm+HH:MM in this machine's zone.
        assert_eq!(stamp.len(), 29, "{local}");
        assert!(matches!(&stamp[23..24], "+" | "-"), "{local}");
    }

    #[test]
    fn json_is_a_valid_array_even_when_empty() {
        let mut buf = Vec::new();
        EventWriter::new(&mut buf, OutputFormat::Json)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(serde_json::from_slice::<Vec<Event>>(&buf).unwrap().len(), 0);
        let mut buf = Vec::new();
        let mut w = EventWriter::new(&mut buf, OutputFormat::Json).unwrap();
        let e = Event::new("a", EventKind::Heartbeat, Severity::Info);
        w.write_event(&e).unwrap();
        w.write_event(&e).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
        assert_eq!(serde_json::from_slice::<Vec<Event>>(&buf).unwrap().len(), 2);
    }

    #[test]
    fn text_line_has_the_essentials() {
        let e = Event::new("probe-7", EventKind::Gap, Severity::High).with_message("dropped 5");
        let line = text_line(&e);
        assert!(line.contains("probe-7") && line.contains("gap") && line.contains("high"));
        assert!(line.contains("dropped 5"));
    }
}
