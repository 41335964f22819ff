#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from real examples: files in the repository (rules, runbooks,
configs, indicator lists), payloads cut from the public captures python3-dpkt ships, a PKI made
by `palisade-collector pki` when that binary is built, and a few hand-written requests and sync
messages. A target whose corpus already holds files is left alone, so a campaign's corpus grows
from run to run. Nothing here is committed: the corpus is made at run time.

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
