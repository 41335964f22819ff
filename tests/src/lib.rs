//! Helpers for end-to-end tests that drive the real binaries on loopback with temp dirs: a PKI
//! made by `palisade-collector pki`, collectors and agents as child processes (killed with
//! SIGKILL where a test says so), and the analyst CLI.
//!
//! The binaries are looked up next to the test executable's profile directory
//! (`target/<profile>/`), or in `PALISADE_BIN_DIR`. `scripts/test.sh` builds them first.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A detection as the correlator raises it, for tests that drive the incident database
/// directly: one event, source address `10.9.x.y` (from `source`) as entity, rule `crash.r<rule>`,
/// event time `now` (seconds).
pub fn detection(source: u64, rule: u64, now: i64) -> palisade_collector::incidents::Alert {
    use palisade_collector::incidents::{Alert, Entities, EventRef};
    use palisade_wire::{Severity, Timestamp};
    let ip = format!("10.9.{}.{}", (source / 256) % 256, source % 256);
    let mut entities = Entities::default();
    entities.ips.insert(ip.clone());
    Alert {
        id: 0,
        timestamp: Timestamp(now * 1_000_000_000),
        raised: Timestamp::now(),
        rule_id: format!("crash.r{rule}"),
        rule_title: format!("Crash test rule {rule}"),
        severity: Severity::Medium,
        kind: "detection".into(),
        group: Vec::new(),
        value: None,
        entities,
        events: vec![EventRef {
            timestamp: Timestamp(now * 1_000_000_000),
            id: format!("{source:016x}{rule:016x}"),
            agent: Some("probe-c".into()),
            sequence: None,
            summary: Some(format!("alert: scan from {ip}")),
        }],
        tags: Vec::new(),
        incident: 0,
    }
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("PALISADE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            // target/<profile>/deps/<test-binary>
            exe.parent()
                .and_then(Path::parent)
                .expect("test binary lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build the binaries first with the same profile (scripts/test.sh does: cargo build --release --workspace --bins)",
        path.display()
    );
    path
}

/// Runs a binary to completion.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env_remove("PALISADE_COLLECTOR")
        .env_remove("PALISADE_PKI_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Runs a binary and insists it succeeded.
pub fn run_ok(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A PKI directory with a CA, the collector's certificate, admins, and whatever is issued.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
}

impl Pki {
    /// `pki init` in `dir`, plus an `analyst` certificate.
    pub fn init(dir: &Path) -> Pki {
        Self::init_with_sans(dir, &[])
    }

    /// [`Pki::init`] with the collector's certificate also valid for `sans` (e.g. its address
    /// on a link into a test's network namespace).
    pub fn init_with_sans(dir: &Path, sans: &[&str]) -> Pki {
        let d = dir.to_str().expect("utf-8 path");
        let mut args = vec!["pki", "init", "--dir", d];
        for san in sans {
            args.extend(["--san", san]);
        }
        run_ok("palisade-collector", &args);
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.issue("analyst", "analyst");
        pki
    }

    /// Issues a certificate; returns its serial.
    pub fn issue(&self, role: &str, name: &str) -> String {
        self.issue_with_sans(role, name, &[])
    }

    /// Issues a certificate that also names `sans` (addresses or DNS names a server answers
    /// on); returns its serial.
    pub fn issue_with_sans(&self, role: &str, name: &str, sans: &[&str]) -> String {
        let mut args = vec![
            "pki",
            "issue",
            "--dir",
            self.dir.to_str().expect("utf-8"),
            "--role",
            role,
            "--name",
            name,
        ];
        for san in sans {
            args.extend(["--san", san]);
        }
        let out = run_ok("palisade-collector", &args);
        out.lines()
            .find_map(|l| l.strip_prefix("serial"))
            .map(|s| s.trim().to_string())
            .expect("serial line")
    }

    /// Revokes a serial.
    pub fn revoke(&self, serial: &str) {
        run_ok(
            "palisade-collector",
            &[
                "pki",
                "revoke",
                "--dir",
                self.dir.to_str().expect("utf-8"),
                "--serial",
                serial,
            ],
        );
    }

    /// `<name>.crt`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `<name>.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// `ca.crt`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// A running collector process.
#[derive(Debug)]
pub struct Collector {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its config file.
    pub config: PathBuf,
    /// The stderr log file.
    pub log: PathBuf,
}

impl Collector {
    /// Writes a config under `dir` (data in `dir/data`) and starts `serve` on `port` (0: any).
    pub fn start(dir: &Path, pki: &Pki, port: u16, extra_toml: &str) -> Collector {
        Self::start_on(dir, pki, "127.0.0.1", port, extra_toml)
    }

    /// [`Collector::start`] listening on `host` (an address of this namespace, e.g. a
    /// [`LossyLink`]'s `host_ip`; the collector's certificate must name it).
    pub fn start_on(dir: &Path, pki: &Pki, host: &str, port: u16, extra_toml: &str) -> Collector {
        std::fs::create_dir_all(dir).expect("collector dir");
        let config = dir.join("collector.toml");
        // Quick CRL reloads for revocation tests; a test's own [server] table takes over.
        let server = if extra_toml.contains("[server]") {
            ""
        } else {
            "[server]\ncrl_reload_secs = 1\n"
        };
        let toml = format!(
            "listen = \"{host}:{port}\"\ndata_dir = \"{}\"\n{extra_toml}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n{server}",
            dir.join("data").display(),
            pki.ca().display(),
            pki.cert("palisade-collector").display(),
            pki.key("palisade-collector").display(),
            pki.dir.join("crl.pem").display(),
        );
        std::fs::write(&config, &toml).expect("write collector config");
        let c = Self::spawn(config, dir.join("collector.log"));
        // Pin the port it got, so a restart comes back where agents expect it.
        let pinned = toml.replacen(
            &format!("listen = \"{host}:{port}\""),
            &format!("listen = \"{host}:{}\"", c.port()),
            1,
        );
        std::fs::write(&c.config, pinned).expect("pin collector port");
        c
    }

    /// Starts again with the same config (same port, same store).
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::spawn(self.config.clone(), self.log.clone());
        *self = again;
    }

    fn spawn(config: PathBuf, log: PathBuf) -> Collector {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("collector log");
        let mut child = Command::new(bin("palisade-collector"))
            .args(["serve", "--config", config.to_str().expect("utf-8")])
            .env("PALISADE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn collector");
        let url = match wait_for_line(
            &mut child,
            "palisade-collector listening on ",
            Duration::from_secs(30),
        ) {
            Some(url) => url,
            None => {
                let _ = child.kill();
                panic!(
                    "collector did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Collector {
            child: Some(child),
            url,
            config,
            log,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait (bounded) for a clean exit; returns whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        terminate(&mut self.child)
    }

    /// The collector's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `palisade-collector audit verify` on this collector's config (run it while stopped).
    pub fn audit_verify(&self) -> Output {
        run(
            "palisade-collector",
            &[
                "audit",
                "verify",
                "--config",
                self.config.to_str().expect("utf-8"),
            ],
        )
    }

    /// Runs an analyst CLI command against this collector as `identity` from `pki`.
    pub fn cli(&self, pki: &Pki, identity: &str, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = pki.dir.to_str().expect("utf-8");
        all.extend(["--collector", &self.url, "--pki-dir", dir, "--as", identity]);
        run("palisade-collector", &all)
    }

    /// Lists events as parsed JSON (ndjson), oldest first.
    pub fn events(&self, pki: &Pki, filters: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec![
            "events",
            "--since",
            "1d",
            "--limit",
            "1000000",
            "--oldest-first",
            "--output-format",
            "ndjson",
        ];
        args.extend_from_slice(filters);
        let out = self.cli(pki, "analyst", &args);
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(1),
            "events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("ndjson line"))
            .collect()
    }
}

fn terminate(child: &mut Option<Child>) -> bool {
    let Some(mut c) = child.take() else {
        return true;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    false
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running agent process.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    /// Its config.
    pub config: PathBuf,
    /// Its data directory (the spool is `data_dir/spool`).
    pub data_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl Agent {
    /// Writes a config for agent `name` under `dir` pointed at `url`, and starts it.
    /// `extra_toml` is appended (e.g. a `[synthetic]` table).
    pub fn start(dir: &Path, pki: &Pki, name: &str, url: &str, extra_toml: &str) -> Agent {
        Self::launch(None, dir, pki, name, url, extra_toml, &[])
    }

    /// [`Agent::start`] with extra environment variables for the process (e.g. libfaketime's).
    pub fn start_with_env(
        dir: &Path,
        pki: &Pki,
        name: &str,
        url: &str,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Agent {
        Self::launch(None, dir, pki, name, url, extra_toml, env)
    }

    /// [`Agent::start`] inside network namespace `netns` (`ip netns exec`; the process id is
    /// still the agent's, so SIGKILL reaches it), or in this one when `None`.
    pub fn start_in(
        netns: Option<&str>,
        dir: &Path,
        pki: &Pki,
        name: &str,
        url: &str,
        extra_toml: &str,
    ) -> Agent {
        Self::launch(netns, dir, pki, name, url, extra_toml, &[])
    }

    fn launch(
        netns: Option<&str>,
        dir: &Path,
        pki: &Pki,
        name: &str,
        url: &str,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Agent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let config = dir.join(format!("{name}.toml"));
        // Tests want quick reconnects; a test's own [ship] table takes over entirely.
        let ship = if extra_toml.contains("[ship]") {
            ""
        } else {
            "[ship]\nmax_backoff_ms = 1000\n"
        };
        let data_dir = dir.join(format!("{name}-data"));
        let toml = format!(
            "collector = \"{url}\"\ndata_dir = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{ship}{extra_toml}\n",
            data_dir.display(),
            pki.ca().display(),
            pki.cert(name).display(),
            pki.key(name).display(),
        );
        std::fs::write(&config, toml).expect("write agent config");
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("palisade-agent"));
                c
            }
            None => Command::new(bin("palisade-agent")),
        };
        let child = cmd
            .args(["run", "--config", config.to_str().expect("utf-8")])
            // PALISADE_TEST_AGENT_LOG=palisade_agent::integrity=debug,info when debugging a test.
            .env(
                "PALISADE_LOG",
                std::env::var("PALISADE_TEST_AGENT_LOG")
                    .unwrap_or_else(|_| "info,palisade_agent::integrity=debug".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn agent");
        Agent {
            child: Some(child),
            config,
            data_dir,
            log,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running (false once it exited or was killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        terminate(&mut self.child)
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log, newest first (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        self.log_text()
            .lines()
            .rev()
            .take(n)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 200 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Events stored according to `status --output-format json`.
pub fn stored_events(collector: &Collector, pki: &Pki) -> Option<u64> {
    let out = collector.cli(pki, "analyst", &["status", "--output-format", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["store"]["events"].as_u64()
}

/// Sends `events` as one batch from agent `agent` (a certificate of that name must exist in
/// `pki`), sealing them with sequences from `first_seq`; returns the collector's HTTP status.
pub fn send_batch(
    url: &str,
    pki: &Pki,
    agent: &str,
    first_seq: u64,
    events: &mut [palisade_wire::Event],
) -> u16 {
    let lines: Vec<(u64, Vec<u8>)> = events
        .iter_mut()
        .enumerate()
        .map(|(i, e)| {
            let seq = first_seq + i as u64;
            e.agent.id = agent.to_string();
            if let Some(o) = e.observer.as_mut() {
                o.name = agent.to_string();
            }
            e.seal(seq);
            (seq, e.to_json())
        })
        .collect();
    let pairs: Vec<(u64, &[u8])> = lines.iter().map(|(s, j)| (*s, j.as_slice())).collect();
    let frame = palisade_wire::batch::encode(agent, &pairs, 3).expect("encode batch");
    let files = palisade_wire::tls::TlsFiles {
        ca: pki.ca(),
        cert: pki.cert(agent),
        key: pki.key(agent),
    };
    let config = palisade_wire::tls::client_config(&files).expect("client tls");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = palisade_wire::client::Client::new(url, config, Duration::from_secs(30))
            .expect("client");
        let resp = client
            .request(
                hyper::Method::POST,
                "/v1/ingest",
                "application/x-palisade-batch",
                bytes::Bytes::from(frame),
            )
            .await
            .expect("ingest request");
        resp.status.as_u16()
    })
}

/// Reads `child`'s stdout until a line starting with `prefix` and returns the rest of that
/// line, or `None` after `limit`. The stdout is drained on a thread for the child's whole life,
/// so its pipe never fills.
pub fn wait_for_line(child: &mut Child, prefix: &str, limit: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let prefix = prefix.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    rx.recv_timeout(limit).ok()
}

/// Whether this process runs as uid 0 (tests that mount, capture live or create network
/// namespaces need it, and say so when they skip).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A small tmpfs mounted on a directory for disk-full tests (needs root); unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    /// Where it is mounted.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir` (created if missing).
    pub fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Changes its size, keeping what it holds (space returns, or runs out).
    pub fn resize(&self, mib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "resize tmpfs {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Rounds of the SIGKILL tests: 20 in the test suite, more for the hardening campaign
/// (`PALISADE_KILL_ROUNDS=50 scripts/test.sh ...`; see docs/RELIABILITY.md).
pub fn kill_rounds() -> usize {
    std::env::var("PALISADE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20)
}

/// A network namespace joined to this one by a veth pair, for partition tests (needs root).
/// The namespace side is `ns_ip`, this side `host_ip` (a /30 of 10.231.0.0/16 picked from the
/// process id and a counter); everything is removed on drop.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    /// This side's address.
    pub host_ip: String,
    /// The namespace side's address.
    pub ns_ip: String,
    host_if: String,
    ns_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates the namespace and the link, both up.
    pub fn create() -> Netns {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
        let pid = std::process::id() % 250;
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let (name, host_if, ns_if) = (
            format!("palisade-{tag}"),
            format!("pl{tag}h"),
            format!("pl{tag}n"),
        );
        let base = n * 4;
        let host_ip = format!("10.231.{pid}.{}", base + 1);
        let ns_ip = format!("10.231.{pid}.{}", base + 2);
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            host_ip,
            ns_ip,
            host_if,
            ns_if,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns.ns_if]);
        inside(&["link", "set", &ns.ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// Caps both directions to `kbit` kbit/s (tbf), so a batch takes long enough to be cut.
    pub fn limit_rate(&self, kbit: u32) {
        let rate = format!("{kbit}kbit");
        for (prefix, dev) in [
            (vec![], &self.host_if),
            (vec!["-n", &self.name], &self.ns_if),
        ] {
            let mut args: Vec<&str> = prefix;
            args.extend([
                "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "32kbit",
                "latency", "2000ms",
            ]);
            let out = Command::new("tc").args(&args).output().expect("run tc");
            assert!(
                out.status.success(),
                "tc {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Cuts the link: packets either way are dropped, connections hang (a partition).
    pub fn partition(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Restores the link.
    pub fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// How a [`LossyLink`] mistreats packets, each direction independently.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Fraction of packets dropped (0.0–1.0).
    pub loss: f64,
    /// One-way delay of every packet that gets through.
    pub delay: Duration,
    /// Uniform spread around `delay` (packets may then arrive out of order, as with netem).
    pub jitter: Duration,
    /// Packets held at most per direction; more are dropped (a bounded queue).
    pub queue: usize,
}

/// Packets a [`LossyLink`] handled, per direction, from its forwarder's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Delivered after the delay.
    pub forwarded: u64,
    /// Dropped at random (the configured loss).
    pub lost: u64,
    /// Dropped while the link was cut.
    pub cut: u64,
    /// Dropped because the queue was full.
    pub queue_full: u64,
}

/// A network namespace joined to this one by a lossy, slow link, for loss-and-delay tests
/// (needs root). This kernel has no `sch_netem`, so the link is a userspace netem:
/// `tests/scripts/lossy_link.py` creates two TUN devices, one moved into the namespace, and
/// forwards IP packets between them, dropping `loss` of them and delaying the rest by `delay`
/// (± `jitter`), both directions, through a bounded queue. Point-to-point addresses from
/// 10.232.0.0/16 (`host_ip` here, `ns_ip` in the namespace). The forwarder stops by itself when
/// this value is dropped (its stdin closes) or when the test process dies; the devices vanish
/// with it and the namespace is deleted on drop.
#[derive(Debug)]
pub struct LossyLink {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    /// This side's address.
    pub host_ip: String,
    /// The namespace side's address.
    pub ns_ip: String,
    forwarder: Child,
    stats: PathBuf,
    _dir: tempfile::TempDir,
}

impl LossyLink {
    /// A link dropping `loss` of the packets each way and delaying the rest by `delay`.
    pub fn create(loss: f64, delay: Duration) -> LossyLink {
        Self::with_shape(LinkShape {
            loss,
            delay,
            jitter: Duration::ZERO,
            queue: 4096,
        })
    }

    /// A link of any shape.
    pub fn with_shape(shape: LinkShape) -> LossyLink {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
        let pid = std::process::id() % 250;
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let name = format!("palisade-lossy-{tag}");
        let (dev_host, dev_ns) = (format!("pt{tag}h"), format!("pt{tag}n"));
        let host_ip = format!("10.232.{pid}.{}", n * 4 + 1);
        let ns_ip = format!("10.232.{pid}.{}", n * 4 + 2);
        let dir = tempfile::tempdir().expect("lossy link temp dir");
        let stats = dir.path().join("stats.json");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lossy_link.py");
        let mut forwarder = Command::new("python3")
            .arg(&script)
            .args(["--dev-a", &dev_host, "--dev-b", &dev_ns])
            .args(["--loss", &shape.loss.to_string()])
            .args(["--delay-ms", &shape.delay.as_millis().to_string()])
            .args(["--jitter-ms", &shape.jitter.as_millis().to_string()])
            .args(["--queue", &shape.queue.to_string()])
            .arg("--stats")
            .arg(&stats)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
        if wait_for_line(&mut forwarder, "ready", Duration::from_secs(10)).is_none() {
            let _ = forwarder.kill();
            let _ = forwarder.wait();
            panic!("{} did not start (see its error above)", script.display());
        }
        ip(&["netns", "add", &name]);
        let link = LossyLink {
            name,
            host_ip,
            ns_ip,
            forwarder,
            stats,
            _dir: dir,
        };
        ip(&["link", "set", &dev_ns, "netns", &link.name]);
        ip(&[
            "addr",
            "add",
            &link.host_ip,
            "peer",
            &link.ns_ip,
            "dev",
            &dev_host,
        ]);
        ip(&["link", "set", &dev_host, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", &link.name];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&[
            "addr",
            "add",
            &link.ns_ip,
            "peer",
            &link.host_ip,
            "dev",
            &dev_ns,
        ]);
        inside(&["link", "set", &dev_ns, "up"]);
        inside(&["link", "set", "lo", "up"]);
        link
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.forwarder.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} of the lossy link's forwarder failed");
    }

    /// Cuts the link: every packet either way is dropped, connections hang (a partition).
    pub fn partition(&self) {
        self.signal("-USR1");
    }

    /// Restores the link (loss and delay as before).
    pub fn heal(&self) {
        self.signal("-USR2");
    }

    /// Counters so far (written by the forwarder about once a second): (host → namespace,
    /// namespace → host).
    pub fn counts(&self) -> (LinkCounts, LinkCounts) {
        let v: serde_json::Value = std::fs::read(&self.stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let side = |d: &serde_json::Value| LinkCounts {
            forwarded: d["forwarded"].as_u64().unwrap_or(0),
            lost: d["lost"].as_u64().unwrap_or(0),
            cut: d["cut"].as_u64().unwrap_or(0),
            queue_full: d["queue_full"].as_u64().unwrap_or(0),
        };
        (side(&v["a_to_b"]), side(&v["b_to_a"]))
    }

    /// One line for a test's output: packets forwarded, lost, cut, each way.
    pub fn summary(&self) -> String {
        let (out, back) = self.counts();
        let pct = |c: &LinkCounts| {
            let seen = c.forwarded + c.lost;
            if seen == 0 {
                0.0
            } else {
                100.0 * c.lost as f64 / seen as f64
            }
        };
        format!(
            "link: out {} forwarded, {} lost ({:.1} %), {} cut; back {} forwarded, {} lost ({:.1} %), {} cut",
            out.forwarded,
            out.lost,
            pct(&out),
            out.cut,
            back.forwarded,
            back.lost,
            pct(&back),
            back.cut
        )
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        // Closing stdin stops the forwarder; its TUN devices go with it.
        drop(self.forwarder.stdin.take());
        if wait_for(Duration::from_secs(3), || {
            self.forwarder.try_wait().ok().flatten()
        })
        .is_none()
        {
            let _ = self.forwarder.kill();
            let _ = self.forwarder.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
