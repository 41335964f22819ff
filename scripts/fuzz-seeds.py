#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from real examples: files in the repository (rules, runbooks,
configs, indicator lists), payloads cut from the public captures python3-dpkt ships, and, when
the binaries are built in the main target dir, a PKI made by `palisade-collector pki`, the
agent's demo capture and the events `replay` finds in it (also framed as agent batches), a signed
integrity baseline, and a small replicator repository (config, snapshots, indexes, packs); plus
hand-written requests, filters, trees, TCP segments and sync messages. A target whose corpus
already holds files is left alone, so a campaign's corpus grows from run to run. Nothing here is
committed: the corpus is made at run time.

Usage: scripts/fuzz-seeds.py CORPUS_DIR
"""

import glob
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DPKT_DATA = "/usr/share/doc/python3-dpkt/examples/data"
# blake3 of no bytes: the content hash of an empty file.
EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def repo_files(pattern):
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def repo_files_at(directory, pattern):
    """Files outside the repository (public example data), when present."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, pattern))):
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def payloads():
    """(kind, bytes) for DNS, HTTP and TLS payloads and ARP bodies in the dpkt captures."""
    try:
        import dpkt
    except ImportError:
        # Debian's python3-dpkt, when another python3 comes first on PATH.
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import dpkt
        except ImportError:
            print("fuzz-seeds: no python3-dpkt, app_protocols starts empty", file=sys.stderr)
            return []
    out = []
    for path in sorted(glob.glob(os.path.join(DPKT_DATA, "*.pcap"))):
        try:
            with open(path, "rb") as f:
                for _, frame in dpkt.pcap.Reader(f):
                    eth = dpkt.ethernet.Ethernet(frame)
                    if isinstance(eth.data, dpkt.arp.ARP):
                        out.append(("arp", bytes(eth.data)))
                        continue
                    ip = eth.data
                    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                        continue
                    l4 = ip.data
                    if isinstance(l4, dpkt.udp.UDP) and 53 in (l4.sport, l4.dport) and l4.data:
                        out.append(("dns", bytes(l4.data)))
                    elif isinstance(l4, dpkt.tcp.TCP) and l4.data:
                        data = bytes(l4.data)
                        if data[:2] == b"\x16\x03":
                            out.append(("tls", data))
                        elif data[:4] in (b"GET ", b"POST", b"HEAD", b"HTTP"):
                            out.append(("http", data))
        except Exception as e:  # a capture dpkt cannot read is not a seed
            print(f"fuzz-seeds: skipping {path}: {e}", file=sys.stderr)
    return out


def client_hellos():
    """ClientHello records from this machine's TLS library (SNI, ALPN, TLS 1.2 and 1.3)."""
    import ssl

    out = []
    for alpn, version in ((["h2", "http/1.1"], None), (None, ssl.TLSVersion.TLSv1_2)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if version:
            ctx.maximum_version = version
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        conn = ctx.wrap_bio(incoming, outgoing, server_hostname="www.example.com")
        try:
            conn.do_handshake()
        except ssl.SSLWantReadError:
            pass
        out.append(outgoing.read())
    return out


def pki_material():
    """PEM and DER certificate material from a fresh dev PKI, when the collector is built."""
    target = os.environ.get("PALISADE_MAIN_TARGET_DIR") or os.path.expanduser(
        "~/.cache/palisade-target"
    )
    collector = os.path.join(target, "release", "palisade-collector")
    if not os.access(collector, os.X_OK):
        return []
    d = tempfile.mkdtemp()
    pki = os.path.join(d, "pki")
    try:
        subprocess.run([collector, "pki", "init", "--dir", pki], check=True, capture_output=True)
        subprocess.run(
            [collector, "pki", "issue", "--dir", pki, "--role", "agent", "--name", "a1"],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"fuzz-seeds: no PKI seeds: {e}", file=sys.stderr)
        return []
    read = lambda n: open(os.path.join(pki, n), "rb").read()
    cert, key, crl, ca = read("a1.crt"), read("a1.key"), read("crl.pem"), read("ca.crt")
    out = [cert, key, crl, ca, cert + key + crl, ca + cert + key]
    der = subprocess.run(
        ["openssl", "x509", "-in", os.path.join(pki, "a1.crt"), "-outform", "der"],
        capture_output=True,
    )
    if der.returncode == 0:
        out.append(der.stdout)
    return out


def main_binary(name):
    """Path of a release binary in the main target dir, or None when it is not built."""
    target = os.environ.get("PALISADE_MAIN_TARGET_DIR") or os.path.expanduser(
        "~/.cache/palisade-target"
    )
    path = os.path.join(target, "release", name)
    return path if os.access(path, os.X_OK) else None


def yara_sources():
    """The repo's YARA files cut into one rule each: the fuzz entry point compiles at most
    4 KiB, which whole files exceed."""
    import re

    out = []
    for text in repo_files("signatures/yara/*.yar"):
        text = text.decode()
        starts = [m.start() for m in re.finditer(r"^(?:private |global )*rule ", text, re.M)]
        head = text[: starts[0]] if starts else text
        imports = "".join(l + "\n" for l in head.splitlines() if l.startswith("import "))
        for a, b in zip(starts, starts[1:] + [len(text)]):
            rule = (imports + text[a:b]).encode()
            if len(rule) <= 4096:
                out.append(rule)
    return out


def demo_capture():
    """(pcap bytes, event lines) from the agent's demo capture and `replay` over it."""
    agent = main_binary("palisade-agent")
    if not agent:
        return None, []
    d = tempfile.mkdtemp()
    pcap = os.path.join(d, "demo.pcap")
    try:
        subprocess.run(
            [agent, "demo-capture", "--out", pcap, "--start", "2026-12-01T00:00:00Z"],
            check=True,
            capture_output=True,
        )
        out = subprocess.run(
            [agent, "replay", "--output-format", "json", pcap], check=True, capture_output=True
        ).stdout
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"fuzz-seeds: no demo capture seeds: {e}", file=sys.stderr)
        return None, []
    with open(pcap, "rb") as f:
        data = f.read()
    # One event per (dataset, action): the capture's variety without 12,000 flows.
    events, seen = [], set()
    for e in json.loads(out):
        key = (e["event"].get("dataset"), e["event"].get("action"))
        if key not in seen:
            seen.add(key)
            events.append(json.dumps(e, separators=(",", ":")).encode())
    return data, events


def pcap_frames(blobs, limit):
    """The frames of classic pcap files (either byte order), at most `limit`."""
    out = []
    for b in blobs:
        if len(b) < 24:
            continue
        order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(b[:4])
        order = order or {b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(b[:4])
        if not order:
            continue
        pos = 24
        while pos + 16 <= len(b) and len(out) < limit:
            caplen = struct.unpack(order + "I", b[pos + 8 : pos + 12])[0]
            out.append(b[pos + 16 : pos + 16 + caplen])
            pos += 16 + caplen
    return out


def pcap_head(b, size):
    """The leading records of a classic pcap file that fit in `size` bytes (a file already that
    small, cut-off last record included, as it is): libFuzzer's `-max_len` defaults to the
    largest seed, and a whole demo capture would let every input grow that long."""
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<"}.get(b[:4], ">")
    pos = 24
    while pos + 16 <= len(b):
        end = pos + 16 + struct.unpack(order + "I", b[pos + 8 : pos + 12])[0]
        if end > size:
            break
        pos = end
    return b[:pos]


def baseline_material():
    """A signed integrity baseline of a small tree (file, subdirectory, symlink) as
    `palisade-agent baseline` writes it, and its sections cut out of it."""
    agent = main_binary("palisade-agent")
    if not agent:
        return [], []
    d = tempfile.mkdtemp()
    www = os.path.join(d, "www")
    os.makedirs(os.path.join(www, "sub"))
    with open(os.path.join(www, "index.php"), "w") as f:
        f.write("<?php echo 1;\n")
    with open(os.path.join(www, "sub", "a.txt"), "w") as f:
        f.write("hello\n")
    os.symlink("index.php", os.path.join(www, "link"))
    config = os.path.join(d, "agent.toml")
    with open(config, "w") as f:
        f.write(
            f'collector = "https://127.0.0.1:7443"\ndata_dir = "{d}/data"\n'
            f'[tls]\nca = "{d}/ca.crt"\ncert = "{d}/a.crt"\nkey = "{d}/a.key"\n'
            f'[integrity]\n[[integrity.paths]]\npath = "{www}"\n'
        )
    try:
        subprocess.run([agent, "baseline", "-c", config], check=True, capture_output=True)
        with open(os.path.join(d, "data", "integrity", "baseline.db"), "rb") as f:
            db = f.read()
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"fuzz-seeds: no baseline seeds: {e}", file=sys.stderr)
        return [], []
    # "PALBASE1" | u32 header length | header | ('S' | u32 length | section)* | 'T' ...
    sections = []
    for order in ("<", ">"):
        found, pos = [], 8 + 4 + struct.unpack(order + "I", db[8:12])[0]
        while pos + 5 <= len(db) and db[pos : pos + 1] == b"S":
            n = struct.unpack(order + "I", db[pos + 1 : pos + 5])[0]
            found.append(db[pos + 5 : pos + 5 + n])
            pos += 5 + n
        if found and db[pos : pos + 1] == b"T":
            sections = found
            break
    return [db], sections


def replicator_repository():
    """{kind: [file bytes]} of a repository `palisade-replicator` made with two backups of a
    small tree (file, random data, subdirectory, symlink)."""
    replicator = main_binary("palisade-replicator")
    if not replicator:
        return {}
    d = tempfile.mkdtemp()
    src, repo = os.path.join(d, "src"), os.path.join(d, "repo")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "a.txt"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(src, "sub", "b.bin"), "wb") as f:
        f.write(os.urandom(3000))
    os.symlink("a.txt", os.path.join(src, "link"))
    try:
        run = lambda *a: subprocess.run([replicator, *a], check=True, capture_output=True)
        run("init", repo)
        run("backup", "--repo", repo, src)
        with open(os.path.join(src, "a.txt"), "a") as f:
            f.write("changed\n")
        run("backup", "--repo", repo, src)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"fuzz-seeds: no repository seeds: {e}", file=sys.stderr)
        return {}
    out = {}
    for kind in ("config", "snapshots", "index", "packs"):
        pattern = "config" if kind == "config" else f"{kind}/**/*"
        for path in sorted(glob.glob(os.path.join(repo, pattern), recursive=True)):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    out.setdefault(kind, []).append(f.read())
    return out


def filters():
    return [
        b"event.dataset = palisade.alert and source.ip in 203.0.113.0/24",
        b"event.dataset = palisade.auth and event.outcome = failure",
        b"not destination.ip in 10.0.0.0/8 || event.severity >= 4",
        b'(agent.id = "probe-*" or agent.id == probe-1) and !exists user.name',
        b"source.port in [443, 8443, \"80\"] and message ~ Scan",
        b"labels.a.b != c and event.sequence < 10 and n > 2.5 && source.ip in 10.1.2.3",
        b"@timestamp >= 2026-01-01T00:00:00Z and source.ip in 2001:db8::/32 or 'a \\'b' = x",
    ]


def trees():
    """Trees as `Tree::parse` accepts them (names are one component without NUL; xattr values
    and `name_hex` are hex), and one whose symlink leaves the restore root."""
    node = lambda name, kind, **kw: dict(
        {"name": name, "kind": kind, "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 1}, **kw
    )
    tree = lambda *entries: json.dumps({"entries": list(entries)}).encode()
    return [
        tree(
            node("a.txt", "file", size=6, chunks=[EMPTY_BLAKE3]),
            node("link", "symlink", target="sub/../a.txt"),
            node("sub", "dir", subtree=EMPTY_BLAKE3),
            node("\ufffdA", "file", name_hex="ff41", xattrs=[{"name": "user.k", "value": "7631"}]),
        ),
        tree(node("up", "symlink", target="../../../../etc/passwd")),
        tree(),
    ]


def blake3(data):
    """BLAKE3 of `data` (32 bytes), for the batch frames' payload hash: the reference
    algorithm, without the `blake3` package this machine does not have."""
    iv = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
          0x5BE0CD19)
    perm, mask = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8), 0xFFFFFFFF
    rotr = lambda x, n: (x >> n | x << (32 - n)) & mask

    def compress(cv, block, counter, block_len, flags):
        m = list(struct.unpack("<16I", block.ljust(64, b"\0")))
        s = list(cv) + list(iv[:4]) + [counter & mask, counter >> 32, block_len, flags]

        def g(a, b, c, d, x, y):
            s[a] = (s[a] + s[b] + x) & mask
            s[d] = rotr(s[d] ^ s[a], 16)
            s[c] = (s[c] + s[d]) & mask
            s[b] = rotr(s[b] ^ s[c], 12)
            s[a] = (s[a] + s[b] + y) & mask
            s[d] = rotr(s[d] ^ s[a], 8)
            s[c] = (s[c] + s[d]) & mask
            s[b] = rotr(s[b] ^ s[c], 7)

        for _ in range(7):
            for i, (a, b, c, d) in enumerate(
                ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                 (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
            ):
                g(a, b, c, d, m[2 * i], m[2 * i + 1])
            m = [m[i] for i in perm]
        return [s[i] ^ s[i + 8] for i in range(8)]

    chunks = [data[i : i + 1024] for i in range(0, len(data), 1024)] or [b""]

    def subtree(lo, hi, root):
        # CHUNK_START 1, CHUNK_END 2, PARENT 4, ROOT 8; a left subtree holds a power of 2 chunks.
        if hi - lo == 1:
            blocks = [chunks[lo][i : i + 64] for i in range(0, len(chunks[lo]), 64)] or [b""]
            cv = iv
            for i, b in enumerate(blocks):
                last = i == len(blocks) - 1
                flags = (1 if i == 0 else 0) | (2 | (8 if root else 0) if last else 0)
                cv = compress(cv, b, lo, len(b), flags)
            return cv
        split = 1
        while split * 2 < hi - lo:
            split *= 2
        left, right = subtree(lo, lo + split, False), subtree(lo + split, hi, False)
        block = struct.pack("<16I", *left, *right)
        return compress(iv, block, 0, 64, 4 | (8 if root else 0))

    return struct.pack("<8I", *subtree(0, len(chunks), True))


def zstd_stored(data):
    """A zstd frame of raw (stored) blocks, which every decoder reads, made without zstd."""
    # Frame header: single segment, 4-byte content size, no checksum, no dictionary.
    out = b"\x28\xb5\x2f\xfd\xa0" + struct.pack("<I", len(data))
    blocks = [data[i : i + (128 << 10)] for i in range(0, len(data), 128 << 10)] or [b""]
    for i, b in enumerate(blocks):
        out += struct.pack("<I", len(b) << 3 | (i == len(blocks) - 1))[:3] + b
    return out


def batches(events):
    """Agent batch frames (`palisade_wire::batch`) of the demo capture's events: all of them,
    one, and a few with gaps between their sequences."""
    if not events:
        return []

    def frame(agent, seqs, lines):
        lines = [json.loads(l) for l in lines]
        for e, seq in zip(lines, seqs):
            e["agent"]["id"], e["event"]["sequence"] = agent, seq
        raw = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in lines)
        payload = zstd_stored(raw)
        head = struct.pack(">QQIII", seqs[0], seqs[-1], len(seqs), len(raw), len(payload))
        return b"PLSB\x01" + bytes([len(agent)]) + agent.encode() + head + blake3(raw) + payload

    return [
        frame("probe-1", list(range(1, len(events) + 1)), events),
        frame("probe-1", [7], events[:1]),
        frame("web-01.dmz", [10, 12, 2**40], events[-3:]),
    ]


def segments():
    """`stream_reassembly` inputs: segments `[op, seq (u32 BE), len, bytes]`; op % 4 is SYN (0),
    close holes (1) or data (2, 3), and op's top bit takes an inspection after it."""
    seg = lambda op, seq, data=b"": bytes([op]) + struct.pack(">IB", seq, len(data)) + data
    get = b"GET /index.php?id=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    return [
        # In order, inspected after each segment.
        seg(0, 1000) + seg(0x82, 1001, get[:20]) + seg(0x82, 1021, get[20:]),
        # Out of order across the sequence wrap, the hole filled last.
        seg(0, 0xFFFFFFF0) + seg(2, 0x00000008, get[24:]) + seg(0x82, 0xFFFFFFF1, get[:24]),
        # A retransmission overlapping what was inspected, with other bytes.
        seg(0, 5) + seg(0x82, 6, get) + seg(0x82, 16, b"X" * 40) + seg(0x82, 60, b"tail"),
        # A hole that never fills: closed, then the data after it inspected.
        seg(0, 5) + seg(2, 6, b"head") + seg(2, 200, b"after a hole") + seg(0x81, 0),
        # Mid-stream (no SYN), up to the inspection depth.
        b"".join(seg(0x82, 77 + 255 * i, bytes([65 + i]) * 255) for i in range(10)),
    ]


def relinked(frames, limit):
    """`packet_decode` inputs for the other link types, from Ethernet frames: Linux cooked
    (SLL, SLL2) and raw IP, each with its selector byte."""
    out = []
    for f in frames[:limit]:
        if len(f) < 14:
            continue
        mac, ether_type, payload = f[6:12], f[12:14], f[14:]
        sll = struct.pack(">HHH", 0, 1, 6) + mac + b"\0\0" + ether_type
        sll2 = ether_type + b"\0\0" + struct.pack(">IHBB", 2, 1, 0, 6) + mac + b"\0\0"
        out += [b"\x01" + sll + payload, b"\x02" + sll2 + payload]
        if ether_type in (b"\x08\x00", b"\x86\xdd"):
            out.append(b"\x03" + payload)
    return out


def api_requests():
    req = lambda m, path, query, body=b"": bytes([m]) + path + b"\n" + query + b"\n" + body
    return [
        req(0, b"/v1/events", b"since=1h&until=now&agent=probe-1&kind=alert&severity=3&limit=50"),
        req(0, b"/v1/events", b"order=asc&filter=source.ip%3D10.0.0.0%2F8%20and%20event.severity%3E%3D3"),
        req(0, b"/v1/events", b"after=2026-03-01T12:00:00.000000001Z:probe-1:42"),
        req(0, b"/v1/incidents", b"status=open&since=1d&limit=10"),
        req(0, b"/v1/alerts", b"incident=INC-7&since=2026-03-01T00:00:00Z"),
        req(0, b"/v1/tail", b"cursor=10&epoch=3&wait_ms=100&limit=5&filter=agent.id%3Dprobe-1"),
        req(0, b"/v1/situation", b"period=15m"),
        req(0, b"/v1/audit", b"since=1h&identity=analyst&limit=5"),
        req(1, b"/v1/incidents/INC-12/ack", b"", b'{"comment": "looking"}'),
        req(1, b"/v1/incidents/12/resolve", b"", b"  "),
    ]


def sync_messages():
    sep = b"\n--\n"
    meta = lambda path, vv, deleted=False: {
        "path": path,
        "vv": vv,
        "hash": None if deleted else EMPTY_BLAKE3,
        "size": 0,
        "mtime_ns": 1_780_000_000_000_000_000,
        "deleted": deleted,
        "origin_site": "site-b",
        "changed_at_ns": 1_780_000_000_000_000_000,
        "mode": 0o644,
    }
    offer = lambda m, chunks=(): b"\x00" + json.dumps({"meta": m, "chunks": list(chunks)}).encode()
    header = json.dumps(
        {"offer": {"meta": meta("dir/b.txt", {"site-b": 1}), "chunks": []}, "missing": []}
    ).encode()
    update = b"\x01" + struct.pack(">I", len(header)) + header
    index = b"\x02" + json.dumps({"site": "site-b", "entries": {"a.txt": {"site-b": 2}}}).encode()
    reply = b"\x03" + json.dumps({"result": "need", "missing": [0, 2]}).encode()
    chunk = {"id": EMPTY_BLAKE3, "len": 5}
    return [
        offer(meta("a.txt", {"site-b": 1})),
        offer(meta("a.txt", {"site-b": 1})) + sep + offer(meta("a.txt", {"site-b": 2}, True)),
        offer(meta("a.txt", {"site-b": 1})) + sep + offer(meta("a.txt", {"site-a": 1})) + sep + index,
        offer(dict(meta("big.bin", {"site-b": 1}), size=5), [chunk]),
        update,
        index,
        reply,
    ]


def selected(selector, blobs):
    return [bytes([selector]) + b for b in blobs]


def main():
    corpus = sys.argv[1]
    p = payloads()
    kinds = {"dns": 0, "http": 2, "tls": 3, "arp": 4}
    app = [bytes([kinds[k]]) + b for k, b in p] + selected(3, client_hellos())
    # DNS over TCP: the UDP messages with their length prefix.
    app += [bytes([1]) + struct.pack(">H", len(b)) + b for k, b in p if k == "dns"]
    ioc = []
    for i, name in enumerate(["ip", "domain", "sni", "ja3", "ja4"]):
        ioc += selected(i, repo_files(f"signatures/net/{name}.txt"))
    capture, events = demo_capture()
    dpkt_captures = repo_files_at(DPKT_DATA, "*.pcap")
    captures = dpkt_captures + ([capture] if capture else [])
    frames = pcap_frames(dpkt_captures, 100) + pcap_frames([capture] if capture else [], 200)
    baselines, sections = baseline_material()
    repo = replicator_repository()
    seeds = {
        "app_protocols": app[:200],
        "ioc_lists": ioc,
        "config_files": selected(0, repo_files("config/agent.example.toml"))
        + selected(1, repo_files("config/collector.example.toml")),
        "sigma_rules": repo_files("signatures/sigma/*.yml"),
        "runbook": repo_files("runbooks/*.toml"),
        "certificates": pki_material(),
        "api_requests": api_requests(),
        "sync_messages": sync_messages(),
        "yara_rules": yara_sources(),
        "pcap_file": [pcap_head(c, 16384) for c in captures],
        # Link type 0 is Ethernet, the link type of all these captures.
        "packet_decode": selected(0, frames) + relinked(frames, 60),
        "stream_reassembly": segments(),
        "batch_decode": batches(events),
        "event_parse": events,
        "filter_parse": filters(),
        "baseline_file": baselines,
        "baseline_section": sections,
        "repo_pack": repo.get("packs", []),
        "repo_index": repo.get("index", []),
        "repo_snapshot": repo.get("snapshots", []) + repo.get("config", []),
        "repo_tree": trees(),
        # A peer uploads records as a pack holds them, without the pack's magic.
        "peer_blobs": [p[5:] for p in repo.get("packs", [])],
    }
    for target, blobs in seeds.items():
        d = os.path.join(corpus, target)
        os.makedirs(d, exist_ok=True)
        if os.listdir(d):
            continue
        for i, b in enumerate(blobs):
            with open(os.path.join(d, f"seed-{i:03}"), "wb") as f:
                f.write(b)


if __name__ == "__main__":
    main()
