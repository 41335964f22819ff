//! Processes of our own stack that a drill starts and stops (`serve`, `sync`, `collector`,
//! `agent`), and the writer thread that produces acknowledged writes for failover drills.
//! Every child is tracked and killed when the drill ends, whatever happened.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::actions::{SiteKind, StartSite, StopSignal};

/// A running (or stopped) process.
#[derive(Debug)]
pub struct Site {
    /// Which program.
    pub kind: SiteKind,
    /// The child while it runs.
    pub child: Option<Child>,
    /// `host:port` it listens on.
    pub addr: Option<String>,
    /// PKI directory it uses.
    pub pki_dir: PathBuf,
    /// Its log file.
    pub log: Option<PathBuf>,
}

/// A binary of the workspace: next to this executable, else on PATH.
pub fn program(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

fn base_command(name: &str) -> Command {
    let mut c = Command::new(program(name));
    for v in [
        "PALISADE_REPO",
        "PALISADE_KEY_FILE",
        "PALISADE_COLLECTOR",
        "PALISADE_PKI_DIR",
        "PALISADE_REPLICATOR_IDENTITY",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

/// Starts a site; waits (up to `timeout`) for it to say where it listens. `previous` is the
/// address of an earlier run of the same site, reused when `listen` asks for port 0 so peers
/// and agents find it again.
pub fn start(
    a: &StartSite,
    previous: Option<&str>,
    log: Option<PathBuf>,
    peers: &HashMap<String, Site>,
    timeout: Duration,
) -> Result<Site, String> {
    let dir = Path::new(&a.dir);
    let pki = PathBuf::from(&a.pki_dir);
    let mut listen = a
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    if listen.ends_with(":0") {
        if let Some(p) = previous {
            listen = p.to_string();
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let identity = a.identity.clone().unwrap_or_else(|| match a.kind {
        SiteKind::Collector => "palisade-collector".to_string(),
        _ => a.site.clone(),
    });
    let pki_s = pki.display().to_string();
    let (mut cmd, wait_prefix) = match a.kind {
        SiteKind::Serve => {
            let mut c = base_command("palisade-replicator");
            c.args(["-r", &a.dir, "--pki-dir", &pki_s, "--identity", &identity]);
            c.args(["serve", "--listen", &listen]);
            (c, Some("listening on "))
        }
        SiteKind::Sync => {
            let mut c = base_command("palisade-replicator");
            c.args(["--pki-dir", &pki_s, "--identity", &identity, "sync"]);
            c.args(["--dir", &a.dir, "--site", &a.site, "--listen", &listen]);
            c.args(["--peer", a.peer.as_deref().unwrap_or_default()]);
            if let Some(s) = &a.state_dir {
                c.args(["--state-dir", s]);
            }
            (c, Some("listening on "))
        }
        SiteKind::Collector => {
            let config = dir.join("collector.toml");
            let toml = format!(
                "listen = \"{listen}\"\ndata_dir = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n",
                dir.join("data").display(),
                pki.join("ca.crt").display(),
                pki.join(format!("{identity}.crt")).display(),
                pki.join(format!("{identity}.key")).display(),
                pki.join("crl.pem").display(),
            );
            std::fs::write(&config, toml)
                .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
            let mut c = base_command("palisade-collector");
            c.args(["serve", "--config", &config.display().to_string()]);
            (c, Some("palisade-collector listening on https://"))
        }
        SiteKind::Agent => {
            let peer = a.peer.as_deref().unwrap_or_default();
            let addr = peers
                .get(peer)
                .and_then(|s| s.addr.clone())
                .ok_or_else(|| format!("agent: site {peer:?} has no known address"))?;
            let config = dir.join("agent.toml");
            let toml = format!(
                "collector = \"https://{addr}\"\ndata_dir = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[ship]\nmax_backoff_ms = 1000\n[synthetic]\nevents = {}\nrate_per_sec = {}\n",
                dir.join("spool").display(),
                pki.join("ca.crt").display(),
                pki.join(format!("{identity}.crt")).display(),
                pki.join(format!("{identity}.key")).display(),
                a.events.unwrap_or(1000),
                a.rate_per_sec.unwrap_or(100),
            );
            std::fs::write(&config, toml)
                .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
            let mut c = base_command("palisade-agent");
            c.args(["run", "--config", &config.display().to_string()]);
            (c, None)
        }
    };
    cmd.env("PALISADE_LOG", "info");
    match log.as_ref().and_then(|l| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(l)
            .ok()
    }) {
        Some(f) => cmd.stderr(f),
        None => cmd.stderr(Stdio::null()),
    };
    cmd.stdout(if wait_prefix.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let mut addr = None;
    if let Some(prefix) = wait_prefix {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| "no stdout from the child".to_string())?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(a) => addr = Some(a),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = log
                    .as_ref()
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .map(|t| {
                        let lines: Vec<&str> = t.lines().rev().take(5).collect();
                        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    })
                    .unwrap_or_default();
                return Err(format!(
                    "{} did not say it was listening within {} s (log: {tail})",
                    a.site,
                    timeout.as_secs()
                ));
            }
        }
    }
    Ok(Site {
        kind: a.kind,
        child: Some(child),
        addr,
        pki_dir: pki,
        log,
    })
}

/// Stops a site: SIGKILL, or SIGTERM and a bounded wait (then SIGKILL). Returns how it ended.
pub fn stop(site: &mut Site, signal: StopSignal, timeout: Duration) -> String {
    let Some(mut c) = site.child.take() else {
        return "was not running".into();
    };
    match signal {
        StopSignal::Kill => {
            let _ = c.kill();
            let _ = c.wait();
            "killed (SIGKILL)".into()
        }
        StopSignal::Term => {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(st)) = c.try_wait() {
                    return format!("stopped (SIGTERM, {st})");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            "did not stop on SIGTERM; killed".into()
        }
    }
}

/// One write the writer made.
#[derive(Clone, Debug)]
pub struct Write1 {
    /// Sequence.
    pub seq: u64,
    /// File name.
    pub rel: String,
    /// blake3 of the content.
    pub hash: String,
    /// When written, ns.
    pub written_ns: i64,
    /// The directory it was written to.
    pub dir: PathBuf,
    /// When seen on the peer, ns.
    pub acked_ns: Option<i64>,
    /// Where it must appear.
    pub check_dir: PathBuf,
}

/// A writer's shared state.
#[derive(Debug, Default)]
pub struct WriterState {
    /// Where writes go now.
    pub dir: PathBuf,
    /// Where new writes must appear to be acknowledged.
    pub check_dir: PathBuf,
    /// Every write.
    pub writes: Vec<Write1>,
    /// Writes that failed (the directory was gone).
    pub errors: u64,
}

impl WriterState {
    /// Acknowledged writes.
    pub fn acked(&self) -> u64 {
        self.writes.iter().filter(|w| w.acked_ns.is_some()).count() as u64
    }

    /// The write time of the newest write acknowledged at or before `t_ns`.
    pub fn recovery_point(&self, t_ns: i64) -> Option<i64> {
        self.writes
            .iter()
            .filter(|w| w.acked_ns.is_some_and(|a| a <= t_ns))
            .map(|w| w.written_ns)
            .max()
    }
}

/// A writer thread.
#[derive(Debug)]
pub struct Writer {
    /// Shared state.
    pub state: Arc<Mutex<WriterState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The ledger file.
    pub ledger: PathBuf,
}

impl Writer {
    /// Starts writing `w-NNNNNN.txt` into `dir` every `interval`; a write is acknowledged (and
    /// appended to `ledger`) once `check_dir` holds it byte-identical.
    pub fn start(dir: PathBuf, check_dir: PathBuf, ledger: PathBuf, interval: Duration) -> Writer {
        let state = Arc::new(Mutex::new(WriterState {
            dir,
            check_dir,
            ..WriterState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, lg) = (state.clone(), stop.clone(), ledger.clone());
        let thread = std::thread::spawn(move || writer_loop(&st, &sp, &lg, interval));
        Writer {
            state,
            stop,
            thread: Some(thread),
            ledger,
        }
    }

    /// Stops the thread (pending writes stay unacknowledged); false when it was stopped
    /// already. The state and the ledger stay readable.
    pub fn stop(&mut self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
                true
            }
            None => false,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn writer_loop(state: &Mutex<WriterState>, stop: &AtomicBool, ledger: &Path, interval: Duration) {
    let mut seq = 0u64;
    let mut next = Instant::now();
    let mut ledger_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .ok();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            next += interval;
            seq += 1;
            let now = palisade_wire::event::Timestamp::now().nanos();
            let rel = format!("w-{seq:06}.txt");
            let content = format!("drill write {seq} at {now}\n{}\n", "x".repeat(200));
            let hash = blake3::hash(content.as_bytes()).to_hex().to_string();
            let (dir, check) = match state.lock() {
                Ok(s) => (s.dir.clone(), s.check_dir.clone()),
                Err(_) => return,
            };
            let ok = std::fs::write(dir.join(&rel), &content).is_ok();
            if let Ok(mut s) = state.lock() {
                if ok {
                    s.writes.push(Write1 {
                        seq,
                        rel,
                        hash,
                        written_ns: now,
                        dir: dir.clone(),
                        acked_ns: None,
                        check_dir: check,
                    });
                } else {
                    s.errors += 1;
                }
            }
        }
        // Acknowledge what the peer now holds.
        let pending: Vec<(usize, PathBuf, String)> = match state.lock() {
            Ok(s) => s
                .writes
                .iter()
                .enumerate()
                .filter(|(_, w)| w.acked_ns.is_none())
                .map(|(i, w)| (i, w.check_dir.join(&w.rel), w.hash.clone()))
                .collect(),
            Err(_) => return,
        };
        for (i, path, hash) in pending {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if blake3::hash(&bytes).to_hex().as_str() != hash {
                continue;
            }
            let now = palisade_wire::event::Timestamp::now().nanos();
            if let Ok(mut s) = state.lock() {
                if let Some(w) = s.writes.get_mut(i) {
                    w.acked_ns = Some(now);
                    if let Some(f) = ledger_file.as_mut() {
                        let _ =
                            writeln!(f, "{} {} {} {} {}", w.seq, w.rel, w.written_ns, now, w.hash);
                        let _ = f.flush();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ledger lines: (file name, blake3).
pub fn read_ledger(ledger: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(ledger)
        .map_err(|e| format!("cannot read ledger {}: {e}", ledger.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5).then(|| (f[1].to_string(), f[4].to_string()))
        })
        .collect())
}
