//! Lossy, slow links and partitions healed mid-batch, through `palisade_tests::LossyLink` (a
//! userspace netem: two TUN devices and a forwarder that drops and delays packets, because this
//! kernel has no `sch_netem`). The link is checked first, then an agent ships to a collector
//! across it and a replicator backs up to a peer's `serve` across it. Needs root (network
//! namespaces, TUN devices); skips with a reason otherwise.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_tests::{bin, is_root, run, run_ok, wait_for, wait_for_line, Agent, Collector};
use palisade_tests::{LossyLink, Pki};

const LOSS: f64 = 0.3;
const DELAY: Duration = Duration::from_millis(500);

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    println!(
        "skipped: network namespaces and TUN devices need root, and this test runs as uid != 0"
    );
    true
}

/// Partitions per run: 2 by default, more for the campaign (`PALISADE_LOSSY_ROUNDS=10`).
fn rounds() -> u64 {
    std::env::var("PALISADE_LOSSY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

/// The emulation itself: UDP probes echoed from inside the namespace come back with the
/// configured delay each way, and about (1 - 0.7²) = 51 % of round trips are lost.
#[test]
fn lossy_link_drops_and_delays_as_configured() {
    if skip_unless_root() {
        return;
    }
    let link = LossyLink::create(LOSS, DELAY);
    let echo_addr = format!("{}:9999", link.ns_ip);
    let mut echo = Command::new("ip")
        .args(["netns", "exec", &link.name, "python3", "-c"])
        .arg(format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{}',9999))\nprint('ready',flush=True)\ns.settimeout(20)\ntry:\n    while True:\n        d,a=s.recvfrom(2048)\n        s.sendto(d,a)\nexcept socket.timeout:\n    pass\n",
            link.ns_ip
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_line(&mut echo, "ready", Duration::from_secs(10)).is_some());
    let sock = UdpSocket::bind(format!("{}:0", link.host_ip)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    const PROBES: u32 = 300;
    let mut sent = Vec::new();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 16];
    let mut receive = |sent: &Vec<Instant>, rtts: &mut Vec<Duration>| {
        if let Ok(n) = sock.recv(&mut buf) {
            if n == 4 {
                let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                rtts.push(sent[i].elapsed());
            }
        }
    };
    for i in 0..PROBES {
        sent.push(Instant::now());
        sock.send_to(&i.to_be_bytes(), &echo_addr).unwrap();
        receive(&sent, &mut rtts);
    }
    // Stragglers: everything still on the link arrives within the delay both ways.
    let until = Instant::now() + DELAY * 4;
    while Instant::now() < until {
        receive(&sent, &mut rtts);
    }
    let _ = echo.kill();
    let _ = echo.wait();
    rtts.sort();
    let lost = 1.0 - rtts.len() as f64 / f64::from(PROBES);
    eprintln!(
        "{} of {PROBES} probes answered ({:.1} % of round trips lost, expected 51 %); rtt min {:?} median {:?} max {:?}; {}",
        rtts.len(),
        lost * 100.0,
        rtts.first(),
        rtts.get(rtts.len() / 2),
        rtts.last(),
        link.summary()
    );
    // 300 round trips at p = 0.51: a standard deviation of 2.9 points; ±15 points is > 5 σ.
    assert!((0.36..=0.66).contains(&lost), "round-trip loss {lost}");
    // A lower bound only (a busy machine only adds to it): no packet beats the delay.
    assert!(rtts[0] >= DELAY * 2, "fastest round trip {:?}", rtts[0]);
    // The link cuts and heals on command.
    link.partition();
    std::thread::sleep(Duration::from_millis(300));
    let cut_before = link.counts().0.cut;
    let _ = sock.send_to(b"cut!", &echo_addr);
    assert!(
        wait_for(Duration::from_secs(5), || (link.counts().0.cut
            > cut_before)
            .then_some(()))
        .is_some(),
        "a packet sent during the partition was not cut: {}",
        link.summary()
    );
    link.heal();
}

/// Every synthetic index 0..n appears exactly once and no sequence repeats.
fn exactly_once(events: &[serde_json::Value], n: u64) -> Result<(), String> {
    let mut seqs = HashSet::new();
    let mut indexes = HashSet::new();
    for e in events {
        let seq = e["event"]["sequence"]
            .as_u64()
            .ok_or("event without sequence")?;
        if !seqs.insert(seq) {
            return Err(format!("sequence {seq} stored twice"));
        }
        let i = e["palisade"]["synthetic"]["index"]
            .as_u64()
            .ok_or("synthetic event without index")?;
        if !indexes.insert(i) {
            return Err(format!("synthetic event {i} stored twice"));
        }
    }
    let missing: Vec<u64> = (0..n).filter(|i| !indexes.contains(i)).take(10).collect();
    if !missing.is_empty() {
        return Err(format!("missing synthetic events, first ones: {missing:?}"));
    }
    Ok(())
}

#[test]
fn agent_over_a_lossy_slow_link_with_partitions_delivers_everything_once() {
    if skip_unless_root() {
        return;
    }
    let rounds = rounds();
    // 10 events/s: about 6 s of production per partition round.
    let n = 60 * rounds;
    let tmp = tempfile::tempdir().unwrap();
    let link = LossyLink::create(LOSS, DELAY);
    let pki = Pki::init_with_sans(&tmp.path().join("pki"), &[&link.host_ip]);
    pki.issue("agent", "probe-lossy");
    // The collector on this side of the link, the agent in the namespace behind it.
    let collector = Collector::start_on(&tmp.path().join("collector"), &pki, &link.host_ip, 0, "");
    let agent = Agent::start_in(
        Some(&link.name),
        &tmp.path().join("agent"),
        &pki,
        "probe-lossy",
        &collector.url,
        &format!(
            "[heartbeat]\ninterval_secs = 0\n[synthetic]\nevents = {n}\nrate_per_sec = 10\n\
             [ship]\nmax_batch_events = 20\nmax_batch_delay_ms = 500\nrequest_timeout_secs = 8\n\
             initial_backoff_ms = 200\nmax_backoff_ms = 2000\n"
        ),
    );
    let synthetic = || collector.events(&pki, &["--agent", "probe-lossy", "--kind", "synthetic"]);
    let started = Instant::now();
    let mut landed_at_cut = Vec::new();
    for round in 0..rounds {
        // Cut while batches are on the wire: the agent sends every 2 s at most, and with 500 ms
        // each way and 30 % loss a request spends seconds in flight.
        let want = 20 * (round + 1);
        wait_for(Duration::from_secs(120), || {
            (synthetic().len() as u64 >= want).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: fewer than {want} events arrived; {}\nagent log:\n{}",
                link.summary(),
                agent.log_text()
            )
        });
        std::thread::sleep(Duration::from_millis(700));
        link.partition();
        landed_at_cut.push(synthetic().len());
        std::thread::sleep(Duration::from_secs(4));
        link.heal();
        std::thread::sleep(Duration::from_secs(3));
    }
    let events = wait_for(Duration::from_secs(180), || {
        let e = synthetic();
        (e.len() as u64 >= n).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "delivery did not resume: {} of {n} stored; {}\nagent log:\n{}",
            synthetic().len(),
            link.summary(),
            agent.log_text()
        )
    });
    // A moment more, so a late retransmission of an already stored batch would show.
    std::thread::sleep(Duration::from_secs(3));
    let events = {
        let again = synthetic();
        assert!(again.len() >= events.len());
        again
    };
    if let Err(e) = exactly_once(&events, n) {
        panic!("{e}; {}", link.summary());
    }
    assert_eq!(events.len() as u64, n, "stored {} of {n}", events.len());
    let (out, back) = link.counts();
    assert!(
        out.cut + back.cut > 0,
        "the partitions cut nothing: {}",
        link.summary()
    );
    let out = collector.cli(&pki, "analyst", &["status", "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let retries = agent.log_text().matches("cannot deliver batch").count();
    eprintln!(
        "{n} events over {rounds} partitions, stored once each in {:.0?}; events stored when each cut began: {landed_at_cut:?}; \
         collector dropped {} duplicate(s), {} batches; agent logged {retries} failed deliveries; {}",
        started.elapsed(),
        v["ingest"]["duplicates"],
        v["ingest"]["batches"],
        link.summary()
    );
}

/// `backup` from this side to a `serve` behind the link, cut for 3 s mid-transfer, then `restore`
/// from that peer over the link, cut again: both complete by themselves, the served repository
/// verifies, and the restored tree is byte-identical.
#[test]
fn backup_to_a_peer_over_a_lossy_slow_link_completes_and_restores() {
    if skip_unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let link = LossyLink::create(LOSS, DELAY);
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue_with_sans("replicator", "offsite", &[&link.ns_ip]);
    pki.issue("replicator", "site-a");
    // About 20 KB on the wire: random bytes (stored raw) and compressible logs.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("logs")).unwrap();
    let mut rng = fastrand::Rng::with_seed(30);
    for i in 0..3 {
        let data: Vec<u8> = (0..4_000).map(|_| rng.u8(..)).collect();
        std::fs::write(src.join(format!("blob{i}")), data).unwrap();
    }
    for i in 0..4 {
        let text: String = (0..1000)
            .map(|l| {
                format!(
                    "2026-12-05T02:{:02}:{:02}Z host-{i} sshd[{}]: accepted key for op{}\n",
                    l / 60 % 60,
                    l % 60,
                    1000 + l,
                    l % 7
                )
            })
            .collect();
        std::fs::write(src.join(format!("logs/{i}.log")), text).unwrap();
    }
    let repo = tmp.path().join("offsite");
    let log = tmp.path().join("serve.log");
    // The repository is made on the far side: `init` over the link is one exchange, not
    // retried (a retry after a lost answer would meet "already has a repository").
    run_ok("palisade-replicator", &["init", repo.to_str().unwrap()]);
    let mut serve = Command::new("ip")
        .args(["netns", "exec", &link.name])
        .arg(bin("palisade-replicator"))
        .args(["-r", repo.to_str().unwrap(), "serve", "--listen"])
        .arg(format!("{}:0", link.ns_ip))
        .args([
            "--pki-dir",
            pki.dir.to_str().unwrap(),
            "--identity",
            "offsite",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr =
        wait_for_line(&mut serve, "listening on ", Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = serve.kill();
            panic!(
                "serve did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let url = format!("https://{addr}");
    let client = [
        "--pki-dir",
        pki.dir.to_str().unwrap(),
        "--identity",
        "site-a",
    ];
    let with_client = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(client.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run_client = |args: &[&str]| {
        let all = with_client(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run("palisade-replicator", &refs);
        assert!(
            out.status.success(),
            "{args:?} over the lossy link failed: {}\n{}\nserve log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            link.summary(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let started = Instant::now();
    // A partition in the middle of the transfer: the backup must still finish by itself.
    let cut = {
        let link = &link;
        std::thread::scope(|s| {
            let h =
                s.spawn(|| run_client(&["backup", src.to_str().unwrap(), "--to", &url, "--quiet"]));
            std::thread::sleep(Duration::from_secs(3));
            link.partition();
            std::thread::sleep(Duration::from_secs(3));
            link.heal();
            h.join().unwrap();
            link.counts().0.cut + link.counts().1.cut
        })
    };
    let backed_up = started.elapsed();
    // The restore reads from the peer over the same link, cut again for 3 s early on: each
    // stalled request fails after the client's stall deadline and is tried again, so the restore
    // finishes by itself.
    let out = tmp.path().join("restored");
    let started = Instant::now();
    {
        let link = &link;
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                run_client(&[
                    "-r",
                    &url,
                    "restore",
                    "latest",
                    "--to",
                    out.to_str().unwrap(),
                    "--quiet",
                ])
            });
            std::thread::sleep(Duration::from_secs(2));
            link.partition();
            std::thread::sleep(Duration::from_secs(3));
            link.heal();
            h.join().unwrap();
        })
    };
    let restored = started.elapsed();
    let _ = serve.kill();
    let _ = serve.wait();
    // What crossed the link verifies in place.
    run_ok(
        "palisade-replicator",
        &["-r", repo.to_str().unwrap(), "verify", "--read-data"],
    );
    let mut files = 0;
    for rel in [
        "blob0",
        "blob1",
        "blob2",
        "logs/0.log",
        "logs/1.log",
        "logs/2.log",
        "logs/3.log",
    ] {
        assert!(
            std::fs::read(src.join(rel)).unwrap() == std::fs::read(out.join(rel)).unwrap(),
            "{rel} differs after restore"
        );
        files += 1;
    }
    assert!(cut > 0, "the partition cut nothing: {}", link.summary());
    eprintln!(
        "backup over the lossy link with a 3 s partition: {backed_up:.0?}; restore from the peer over it with another: {restored:.0?}; verified, restored byte-identical ({files} files); {}",
        link.summary()
    );
}
