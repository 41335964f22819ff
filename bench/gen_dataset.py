#!/usr/bin/env python3
"""Deterministic mixed data set for the replicator benchmark (bench/replicate.sh).

    gen_dataset.py DIR [--size-mb 1024] [--seed 1] [--jobs N]
        Writes a tree of about SIZE MiB (several thousand files at 1 GiB) into DIR, byte for
        byte the same for the same size and seed (each file's content comes from its own
        Random(seed/index), so --jobs does not change the output):
          docs/      ~15 %  word-salad text (.txt .md .html .csv) from a generated vocabulary,
                            512 B - 256 KiB, compresses about 3.5x with zstd -3
          var/log/   ~15 %  nginx access and syslog/auth logs (timestamps, IPs, pids), 64 KiB -
                            16 MiB, active .log files plus rotated .log.N
          db/        ~35 %  database-like files of 8 KiB pages (header + column-packed records:
                            sequential ids, times, status, uuids, amounts, text heap), 256 KiB -
                            64 MiB, partially compressible (about 2x)
          media/     ~29 %  random bytes (.jpg .mp4 .zip with a plausible magic), 16 KiB - 8 MiB
          archives/   ~6 %  real gzip output (gzip -6 of generated logs and text)
        Last line of stdout: JSON {"files", "bytes", "dirs", "seconds", "by_kind"}.

    gen_dataset.py DIR --mutate [--percent 1] [--seed 2]
        A scattered change of about PERCENT % of the tree's bytes: appends lines to some active
        logs, rewrites runs of 8-32 pages (64-256 KiB, page aligned, non-overlapping) inside db
        files, replaces some small files with new content, adds new files, deletes a couple.
        Last line of stdout: JSON {"changed_bytes": N, ...}; changed_bytes = bytes written =
        appended + overwritten + replaced + new (deleted bytes are reported, not counted).

Only the standard library; content is built from big buffers (randbytes, table lookups through
map(), bytes.join), never byte by byte, so 1 GiB takes well under a minute.
"""
import argparse
import array
import gzip
import json
import math
import os
import random
import struct
import sys
import time
import zlib

MiB = 1 << 20
PAGE = 8192
KIND_SHARE = (("text", 0.15), ("log", 0.15), ("db", 0.35), ("media", 0.29), ("gz", 0.06))


# --- shared tables (built once per process from the seed; workers inherit them by fork) -------

class Tables:
    """Vocabulary and lookup tables: 65536-entry tables indexed by random 16-bit values, so a
    buffer of N words or log lines is one randbytes() and one b"".join(map(...))."""

    def __init__(self, seed):
        rng = random.Random(f"{seed}/tables")
        cons = "b c d f g h j k l m n p r s t v w z st tr ch sh pl br gr th".split()
        vow = "a e i o u ai ea ou io y".split()

        def word():
            n = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
            return "".join(rng.choice(cons) + rng.choice(vow) for _ in range(n)) + rng.choice(
                ("", "", "n", "s", "r", "t", "l"))

        vocab = list(dict.fromkeys(word() for _ in range(12000)))[:5000]
        self.vocab = vocab
        weights = [1.0 / (i + 1) for i in range(len(vocab))]   # Zipf, s = 1
        words = rng.choices(vocab, weights=weights, k=65536)
        table = []
        for w in words:
            r = rng.random()
            if r < 0.06:
                table.append((w + ".\n").encode())
            elif r < 0.12:
                table.append((w + ", ").encode())
            elif r < 0.14:
                table.append((w.capitalize() + " ").encode())
            else:
                table.append((w + " ").encode())
        self.words = table

        # Log pools.
        ips = ["%d.%d.%d.%d" % (rng.choice((10, 172, 192, 203, 198, 61, 114, 223, 36, 120)),
                                rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))
               for _ in range(3000)]
        users = ["-"] * 12 + [rng.choice(vocab) for _ in range(40)]
        paths = ["/" + "/".join(rng.choice(vocab) for _ in range(rng.randrange(1, 4)))
                 + rng.choice(("", ".html", ".php", ".js", ".css", ".png", "/", ".json"))
                 for _ in range(4000)]
        uas = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/%d.0.%d.%d Safari/537.36" % (rng.randrange(90, 125), rng.randrange(5000),
                                                    rng.randrange(200)) for _ in range(60)]
        uas += ["curl/7.%d.0" % rng.randrange(60, 89) for _ in range(5)]
        uas += ["Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "python-requests/2.%d.0" % rng.randrange(20, 32), "Go-http-client/1.1"]
        methods = ["GET"] * 16 + ["POST"] * 3 + ["HEAD", "PUT", "OPTIONS"]
        status = [200] * 30 + [304] * 4 + [301, 302, 403, 404, 404, 404, 500, 502]
        self.ip_user = [("%s - %s [" % (rng.choice(ips), rng.choice(users))).encode()
                        for _ in range(65536)]
        self.http_tail = []
        for _ in range(65536):
            p = rng.choice(paths)
            if rng.random() < 0.3:
                p += "?id=%d&%s=%s" % (rng.randrange(100000), rng.choice(vocab), rng.choice(vocab))
            self.http_tail.append(('] "%s %s HTTP/1.1" %d %d "%s" "%s"\n' % (
                rng.choice(methods), p, rng.choice(status), rng.randrange(0, 60000),
                rng.choice(("-", "-", "https://www.example.gov.cn" + rng.choice(paths))),
                rng.choice(uas))).encode())
        hosts = ["gw-%02d" % i for i in range(4)] + ["web-%02d" % i for i in range(8)]
        self.sys_tail = []
        for _ in range(65536):
            h = rng.choice(hosts)
            pid = rng.randrange(300, 65000)
            k = rng.randrange(10)
            if k < 3:
                m = "sshd[%d]: Failed password for %s from %s port %d ssh2" % (
                    pid, rng.choice(users[12:] + ["root", "admin"]), rng.choice(ips),
                    rng.randrange(1024, 65535))
            elif k == 3:
                m = "sshd[%d]: Accepted publickey for %s from %s port %d ssh2: ED25519 SHA256:%s" % (
                    pid, rng.choice(users[12:]), rng.choice(ips), rng.randrange(1024, 65535),
                    rng.randbytes(24).hex()[:43])
            elif k == 4:
                m = "kernel: [UFW BLOCK] IN=eth0 OUT= SRC=%s DST=%s LEN=%d PROTO=TCP SPT=%d DPT=%d" % (
                    rng.choice(ips), rng.choice(ips), rng.randrange(40, 1500),
                    rng.randrange(1024, 65535), rng.choice((22, 23, 80, 443, 445, 3389, 8080)))
            elif k == 5:
                m = "CRON[%d]: (%s) CMD (%s)" % (pid, rng.choice(("root", "www-data")),
                                                rng.choice(("run-parts /etc/cron.hourly",
                                                            "/usr/lib/php/sessionclean",
                                                            "test -x /usr/sbin/anacron")))
            elif k == 6:
                m = "systemd[1]: Started %s.service - %s %s." % (
                    rng.choice(vocab), rng.choice(vocab).capitalize(), rng.choice(vocab))
            elif k == 7:
                m = "nginx[%d]: upstream timed out (110: Connection timed out) while reading " \
                    "response header from upstream, client: %s, request: \"GET %s HTTP/1.1\"" % (
                        pid, rng.choice(ips), rng.choice(paths))
            elif k == 8:
                m = "sudo[%d]: %s : TTY=pts/%d ; PWD=/home/%s ; USER=root ; COMMAND=/usr/bin/%s" % (
                    pid, rng.choice(users[12:]), rng.randrange(5), rng.choice(users[12:]),
                    rng.choice(vocab))
            else:
                m = "app[%d]: level=info msg=\"%s %s %s\" req_id=%s latency_ms=%d" % (
                    pid, rng.choice(vocab), rng.choice(vocab), rng.choice(vocab),
                    rng.randbytes(8).hex(), rng.randrange(1, 2000))
            self.sys_tail.append((" %s %s\n" % (h, m)).encode())
        # db text heap entries: name / email / city / note, some with random tokens.
        self.heap = []
        for _ in range(65536):
            a, b = rng.choice(vocab), rng.choice(vocab)
            e = "%s %s|%s.%s@%s.gov.cn|%s|" % (a.capitalize(), b.capitalize(), a, b,
                                                rng.choice(vocab), rng.choice(vocab).capitalize())
            if rng.random() < 0.5:
                e += rng.randbytes(rng.randrange(4, 16)).hex()
            else:
                e += " ".join(rng.choice(vocab) for _ in range(rng.randrange(1, 6)))
            self.heap.append(e.encode() + b"\x00")
        self.status_map = bytes(rng.choice((0, 1, 1, 1, 1, 2, 2, 3, 9)) for _ in range(256))
        self.months = b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
        self.hms = [b"%02d:%02d:%02d" % (s // 3600, (s // 60) % 60, s % 60) for s in range(86400)]


T = None


def idx16(rng, n):
    return array.array("H", rng.randbytes(2 * n))


# --- content generators ---------------------------------------------------------------------

def text_bytes(rng, size, ext=".txt"):
    head = {
        ".md": b"# %s\n\n" % T.words[rng.randrange(65536)].strip(b" ,.\n").capitalize(),
        ".html": b"<!DOCTYPE html>\n<html><head><title>%d</title></head><body><p>\n" % rng.randrange(10**9),
        ".csv": b"id,title,body\n",
    }.get(ext, b"")
    n = size // 6 + 16
    body = b"".join(map(T.words.__getitem__, idx16(rng, n)))
    out = head + body
    while len(out) < size:
        out += b"".join(map(T.words.__getitem__, idx16(rng, n)))
    return out[:size]


def log_bytes(rng, size, kind, t0):
    """nginx access or syslog lines with monotonically increasing timestamps from t0 (epoch s)."""
    parts = []
    n = 0
    t = t0
    while n < size:
        lines = max(64, (size - n) // 140 + 64)
        gaps = rng.randbytes(lines)
        if kind == "nginx":
            heads = map(T.ip_user.__getitem__, idx16(rng, lines))
            tails = map(T.http_tail.__getitem__, idx16(rng, lines))
        else:
            heads = None
            tails = map(T.sys_tail.__getitem__, idx16(rng, lines))
        day_cache = {}
        buf = []
        for i, tail in enumerate(tails):
            t += gaps[i] & 3
            day, sec = divmod(t, 86400)
            pre = day_cache.get(day)
            if pre is None:
                tm = time.gmtime(day * 86400)
                if kind == "nginx":
                    pre = b"%02d/%s/%d:" % (tm.tm_mday, T.months[tm.tm_mon - 1], tm.tm_year)
                else:
                    pre = b"%s %2d " % (T.months[tm.tm_mon - 1], tm.tm_mday)
                day_cache[day] = pre
            if heads is not None:
                buf.append(next(heads) + pre + T.hms[sec] + b" +0000" + tail)
            else:
                buf.append(pre + T.hms[sec] + tail)
        chunk = b"".join(buf)
        parts.append(chunk)
        n += len(chunk)
    out = b"".join(parts)
    cut = out.rfind(b"\n", 0, size)
    return out[:cut + 1] if cut > 0 else out[:size], t


def db_page(rng, page_no, lsn, free=False):
    """One 8 KiB page: 32-byte header, then columns for 48 records and a text heap."""
    if free:
        hdr = struct.pack("<4sIQHHI8x", b"PGL1", page_no, lsn, 0, 1, 0)
        return hdr + bytes(PAGE - len(hdr))
    r = 48
    base = page_no * r
    ids = array.array("Q", range(base, base + r)).tobytes()
    t = 1_700_000_000 + page_no * 37
    times = array.array("I", range(t, t + r * 3, 3)).tobytes()
    status = rng.randbytes(r).translate(T.status_map)
    rnd = rng.randbytes(r * 16 + r * 4)          # uuids + amounts
    fixed = ids + times + status + rnd
    heap_len = PAGE - 32 - len(fixed)
    heap = b"".join(map(T.heap.__getitem__, idx16(rng, heap_len // 40 + 8)))
    if len(heap) < heap_len:
        heap += bytes(heap_len - len(heap))
    body = fixed + heap[:heap_len]
    hdr = struct.pack("<4sIQHHI8x", b"PGL1", page_no, lsn, r, 0, zlib.crc32(body))
    return hdr + body


def db_pages(rng, first, count, lsn0):
    out = []
    for p in range(first, first + count):
        out.append(db_page(rng, p, lsn0 + p * 3 + rng.randrange(3), free=rng.random() < 0.03))
    return b"".join(out)


MAGIC = {".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
         ".mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
         ".zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00"}


def media_bytes(rng, size, ext):
    m = MAGIC.get(ext, b"")
    return (m + rng.randbytes(max(0, size - len(m))))[:size]


def gz_bytes(rng, size, name):
    """Real gzip -6 output of generated logs or text, about `size` bytes (not truncated, so the
    file stays a valid gzip stream)."""
    if ".log" in name:
        raw, _ = log_bytes(rng, int(size * 4.7), "nginx" if "access" in name else "syslog",
                           1_690_000_000 + rng.randrange(10**7))
    else:
        raw = text_bytes(rng, int(size * 3.0))
    return gzip.compress(raw, compresslevel=6, mtime=0)


# --- the plan: every file's path, kind and size, from the seed alone ----------------------------

def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def plan(size_mb, seed):
    rng = random.Random(f"{seed}/plan")
    total = size_mb * MiB
    files = []
    v = T.vocab

    def add(kind, path, size, **kw):
        files.append(dict(kind=kind, path=path, size=size, **kw))

    for kind, share in KIND_SHARE:
        budget = int(total * share)
        i = 0
        while budget > 0:
            if kind == "text":
                size = min(budget, log_uniform(rng, 512, 256 * 1024))
                ext = rng.choice((".txt", ".txt", ".md", ".html", ".csv"))
                d = "docs/%s/%s-%d/%s" % (("finance", "hr", "legal", "ops", "planning", "press")[i % 6],
                                          v[(i // 6) % 9 + 10], (i // 6) % 9, v[(i // 54) % 5 + 30])
                add(kind, "%s/%s-%05d%s" % (d, v[rng.randrange(200)], i, ext), size)
            elif kind == "log":
                size = min(budget, log_uniform(rng, 64 * 1024, 16 * MiB))
                host = "%s-%02d" % (("web", "gw", "app")[i % 3], (i // 3) % 4)
                svc, name = (("nginx", "access.log") if i % 2 == 0 else ("syslog", "auth.log"))
                rot = (i // 12)
                fname = name if rot == 0 else "%s.%d" % (name, rot)
                add(kind, "var/log/%s/%s/%s" % (host, svc, fname), size,
                    fmt="nginx" if svc == "nginx" else "syslog",
                    t0=1_700_000_000 - rot * 86400 * 7 + rng.randrange(86400))
            elif kind == "db":
                pages = max(1, min(budget, log_uniform(rng, 256 * 1024, 64 * MiB)) // PAGE)
                size = pages * PAGE
                if i % 4 == 3:
                    path = "db/sqlite/%s-%d.db" % (v[i % 50 + 100], i)
                else:
                    path = "db/pg-%d/base/%d/%d" % (i % 2, 16384 + (i % 3), 24576 + i * 7)
                add(kind, path, size)
            elif kind == "media":
                size = min(budget, log_uniform(rng, 16 * 1024, 8 * MiB))
                ext = rng.choice((".jpg", ".jpg", ".jpg", ".mp4", ".zip", ".bin"))
                add(kind, "media/%d/%s-%d/IMG_%05d%s" % (2019 + i % 6, v[(i // 6) % 12 + 60],
                                                          (i // 6) % 12, i, ext), size)
            else:
                size = min(budget, log_uniform(rng, 16 * 1024, 2 * MiB))
                name = rng.choice(("access.log", "auth.log", "report.txt", "export.txt"))
                add(kind, "archives/%d/%02d/%s-%04d.gz" % (2020 + i % 5, 1 + (i // 5) % 12, name, i),
                    size)
            budget -= size
            i += 1
    return files


def write_file(root, spec, rng):
    kind, path, size = spec["kind"], spec["path"], spec["size"]
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if kind == "text":
        data = text_bytes(rng, size, os.path.splitext(path)[1])
    elif kind == "log":
        data, _ = log_bytes(rng, size, spec["fmt"], spec["t0"])
    elif kind == "db":
        data = db_pages(rng, 0, size // PAGE, rng.randrange(1 << 40))
    elif kind == "media":
        data = media_bytes(rng, size, os.path.splitext(path)[1])
    else:
        data = gz_bytes(rng, size, path)
    with open(full, "wb") as f:
        f.write(data)
    return kind, len(data)


_ROOT = _SEED = None


def _work(item):
    i, spec = item
    return write_file(_ROOT, spec, random.Random(f"{_SEED}/file/{i}"))


def generate(root, size_mb, seed, jobs):
    global _ROOT, _SEED
    t0 = time.time()
    files = plan(size_mb, seed)
    os.makedirs(root, exist_ok=True)
    if os.listdir(root):
        sys.exit(f"gen_dataset: {root} is not empty")
    _ROOT, _SEED = root, seed
    # Biggest first so the workers finish together.
    items = sorted(enumerate(files), key=lambda x: -x[1]["size"])
    by_kind = {}
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as pool:
            results = list(pool.imap_unordered(_work, items, chunksize=8))
    else:
        results = [_work(it) for it in items]
    total = 0
    for kind, n in results:
        k = by_kind.setdefault(kind, [0, 0])
        k[0] += 1
        k[1] += n
        total += n
    dirs = {os.path.dirname(f["path"]) for f in files}
    print(json.dumps({"files": len(files), "bytes": total, "dirs": len(dirs),
                      "seconds": round(time.time() - t0, 2), "seed": seed, "size_mb": size_mb,
                      "by_kind": {k: {"files": v[0], "bytes": v[1]} for k, v in sorted(by_kind.items())}}))


# --- mutate ---------------------------------------------------------------------------------

def kind_of(rel):
    top = rel.split("/", 1)[0]
    return {"docs": "text", "var": "log", "db": "db", "media": "media", "archives": "gz"}.get(top, "other")


def mutate(root, percent, seed):
    rng = random.Random(f"{seed}/mutate")
    t_start = time.time()
    tree = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(d, n)
            st = os.lstat(full)
            if os.path.isfile(full):
                rel = os.path.relpath(full, root)
                tree.append((rel, kind_of(rel), st.st_size))
    if not tree:
        sys.exit(f"gen_dataset: no files under {root}")
    total = sum(s for _, _, s in tree)
    budget = int(total * percent / 100)
    by = {}
    for e in tree:
        by.setdefault(e[1], []).append(e)
    stats = dict(appended_bytes=0, overwritten_bytes=0, replaced_bytes=0, new_bytes=0,
                 deleted_bytes=0, files_appended=0, files_overwritten=0, db_runs=0,
                 files_replaced=0, files_new=0, files_deleted=0)
    touched = set()

    # 1. db: runs of 8-32 pages (64-256 KiB) at page-aligned, non-overlapping offsets; files
    #    picked with probability proportional to their size.
    db_budget = int(budget * 0.45)
    dbs = [e for e in by.get("db", []) if e[2] >= 16 * PAGE]
    runs = {}
    tries = 0
    while dbs and stats["overwritten_bytes"] < db_budget and tries < 10000:
        tries += 1
        rel, _, size = rng.choices(dbs, weights=[e[2] for e in dbs])[0]
        pages = size // PAGE
        n = min(rng.randint(8, 32), pages, max(1, (db_budget - stats["overwritten_bytes"]) // PAGE))
        first = rng.randrange(0, pages - n + 1)
        if any(first < b and a < first + n for a, b in runs.get(rel, [])):
            continue
        runs.setdefault(rel, []).append((first, first + n))
        data = db_pages(rng, first, n, rng.randrange(1 << 40) + (1 << 41))
        with open(os.path.join(root, rel), "r+b") as f:
            f.seek(first * PAGE)
            f.write(data)
        stats["overwritten_bytes"] += len(data)
        stats["db_runs"] += 1
        touched.add(rel)
    stats["files_overwritten"] = len(runs)

    # 2. logs: append new lines (later timestamps) to some active logs.
    log_budget = int(budget * 0.20)
    active = [e for e in by.get("log", []) if e[0].endswith(".log")]
    rng.shuffle(active)
    k = max(1, min(len(active), 6))
    for rel, _, size in active[:k]:
        want = log_budget // k
        if want <= 0:
            break
        fmt = "nginx" if "/nginx/" in rel else "syslog"
        data, _ = log_bytes(rng, want, fmt, 1_700_100_000 + rng.randrange(86400))
        with open(os.path.join(root, rel), "ab") as f:
            f.write(data)
        stats["appended_bytes"] += len(data)
        stats["files_appended"] += 1
        touched.add(rel)

    # 3. replace small files (text < 64 KiB, media < 256 KiB) with new content of a similar size.
    rep_budget = int(budget * 0.15)
    small = [e for e in by.get("text", []) if e[2] < 64 * 1024 and e[0] not in touched]
    small += [e for e in by.get("media", []) if e[2] < 256 * 1024 and e[0] not in touched]
    rng.shuffle(small)
    for rel, kind, size in small:
        if stats["replaced_bytes"] >= rep_budget:
            break
        if stats["files_replaced"] and size > rep_budget - stats["replaced_bytes"]:
            continue
        new_size = max(64, int(size * rng.uniform(0.8, 1.2)))
        ext = os.path.splitext(rel)[1]
        data = text_bytes(rng, new_size, ext) if kind == "text" else media_bytes(rng, new_size, ext)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
        stats["replaced_bytes"] += len(data)
        stats["files_replaced"] += 1
        touched.add(rel)

    # 4. new files: text next to existing docs, a few media files.
    new_budget = budget - stats["overwritten_bytes"] - stats["appended_bytes"] - stats["replaced_bytes"]
    text_dirs = sorted({os.path.dirname(e[0]) for e in by.get("text", [])}) or ["docs/new"]
    media_dirs = sorted({os.path.dirname(e[0]) for e in by.get("media", [])}) or ["media/new"]
    i = 0
    while stats["new_bytes"] < new_budget or i < 2:      # at least two new files
        left = max(4096, new_budget - stats["new_bytes"])
        if i % 3 != 2:
            size = min(left, log_uniform(rng, 2048, 128 * 1024))
            rel = "%s/new-%s-%s-%03d.txt" % (rng.choice(text_dirs), seed, T.vocab[rng.randrange(300)], i)
            data = text_bytes(rng, max(size, 64), ".txt")
        else:
            size = min(left, log_uniform(rng, 64 * 1024, 2 * MiB))
            rel = "%s/IMG_new_%s_%03d.jpg" % (rng.choice(media_dirs), seed, i)
            data = media_bytes(rng, max(size, 64), ".jpg")
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        stats["new_bytes"] += len(data)
        stats["files_new"] += 1
        i += 1

    # 5. delete a couple of untouched files.
    cand = [e for e in by.get("text", []) + by.get("media", []) if e[0] not in touched]
    for rel, _, size in rng.sample(cand, min(3, len(cand))):
        os.remove(os.path.join(root, rel))
        stats["deleted_bytes"] += size
        stats["files_deleted"] += 1

    changed = (stats["appended_bytes"] + stats["overwritten_bytes"] + stats["replaced_bytes"]
               + stats["new_bytes"])
    out = {"changed_bytes": changed, **stats, "tree_bytes_before": total,
           "changed_percent": round(100 * changed / total, 3), "percent": percent, "seed": seed,
           "seconds": round(time.time() - t_start, 2)}
    print(json.dumps(out))


def main():
    global T
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("dir")
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the tree in MiB (default 1024)")
    ap.add_argument("--seed", default=None, help="default 1, or 2 with --mutate")
    ap.add_argument("--mutate", action="store_true", help="change an existing tree instead")
    ap.add_argument("--percent", type=float, default=1.0, help="with --mutate: share of bytes to change")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else ("2" if a.mutate else "1")
    T = Tables(seed)
    if a.mutate:
        mutate(a.dir, a.percent, seed)
    else:
        generate(a.dir, a.size_mb, seed, max(1, a.jobs))


if __name__ == "__main__":
    main()
