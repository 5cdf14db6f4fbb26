#!/usr/bin/env python3
"""Benchmarks of the device side on a private LAN of network namespaces.

    cargo build --release -p idprovd --bin idprovd -p idprov-client --examples
    sudo python3 idprov-client/bench/lan_bench.py [--runs 20] [--fleet 1000]

Builds its own namespaces (switch + hub + dev, 10.213.0.0/24, removed at the
end), starts the release idprovd on the hub with mDNS on eth0, and measures:

1. time from starting the `device` example (pre-approved, no server address:
   DNS-SD discovery included) to holding a token, over --runs fresh devices;
2. size of the stripped release `device` binary and its RSS while renewing;
3. the `fleet` example: --fleet devices provisioning, renewing back to back,
   then a keeper soak, against the same daemon.

Needs root, iproute2, openssl, curl.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REL = os.path.join(ROOT, "target", "release")
PREFIX = f"idpb{os.getpid()}"
NS = {h: f"{PREFIX}-{h}" for h in ("sw", "hub", "dev")}
HUB_IP = "10.213.0.1"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def lan_up():
    sh("ip", "netns", "add", NS["sw"])
    sh("ip", "-n", NS["sw"], "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", NS["sw"], "link", "set", "br0", "up")
    for i, (host, addr) in enumerate([("hub", HUB_IP), ("dev", "10.213.0.11")]):
        ns = NS[host]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", NS["sw"])
        sh("ip", "-n", NS["sw"], "link", "set", f"p{i}", "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "multicast", "on", "up")


def lan_down():
    for ns in NS.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(host, *args):
    return ["ip", "netns", "exec", NS[host], *args]


def start_daemon(work, lifetime):
    data = os.path.join(work, "hub-data")
    cfg = os.path.join(work, "idprovd.toml")
    with open(cfg, "w") as f:
        f.write(f"""listen = "0.0.0.0:8445"
data_dir = "{data}"
[tokens]
lifetime = "{lifetime}"
[limits]
# The fleet is 1,000 devices behind one source address.
max_connections_per_source = 4096
[log]
level = "warn"
[mdns]
interfaces = ["eth0"]
instance_name = "bench-hub"
""")
    p = subprocess.Popen(in_ns("hub", os.path.join(REL, "idprovd"), "--config", cfg),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    fp = None
    for line in p.stdout:
        if line.startswith("CA fingerprint"):
            fp = line.split(":", 1)[1].strip()
            break
    if not fp:
        raise SystemExit("idprovd did not start")
    with open(os.path.join(data, "admin.profile"), "rb") as f:
        profile = tomllib.load(f)
    ca = os.path.join(work, "ca.pem")
    with open(ca, "w") as f:
        f.write(profile["ca_cert"])
    return p, fp, profile, ca, os.path.join(data, "admin.profile")


def oob_upload(profile, ca, entries):
    body = json.dumps({"entries": entries, "replace": True})
    sh(*in_ns("hub", "curl", "-sf", "--cacert", ca, "-H", f"Authorization: Bearer {profile['token']}",
              "-H", "Content-Type: application/json", "--data-binary", "@-",
              "https://127.0.0.1:8445/idprov/v1/admin/oob"), input=body)


def new_device(work, name, profile, ca):
    key = os.path.join(work, f"{name}.key")
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    pub = sh("openssl", "pkey", "-in", key, "-pubout").stdout
    oob_upload(profile, ca, [{"device_id": name, "public_key": pub}])
    return key


def bench_start(work, fp, profile, ca, runs):
    device = os.path.join(REL, "examples", "device")
    wall, inner = [], []
    for i in range(runs):
        name = f"bench-dev-{i}"
        key = new_device(work, name, profile, ca)
        # A responder answers a repeated query at most once a second.
        time.sleep(1.2)
        t0 = time.monotonic()
        out = sh(*in_ns("dev", device, "--id", name, "--key", key, "--state-dir",
                        os.path.join(work, f"{name}-state"), "--ca-fingerprint", fp, "--once"))
        wall.append(time.monotonic() - t0)
        for line in out.stdout.splitlines():
            if line.startswith("event: token"):
                inner.append(float(line.rsplit("t=", 1)[1]))
    return wall, inner


def bench_rss(work, fp, profile, ca):
    device = os.path.join(REL, "examples", "device")
    key = new_device(work, "bench-rss", profile, ca)
    time.sleep(1.2)
    p = subprocess.Popen(in_ns("dev", device, "--id", "bench-rss", "--key", key, "--state-dir",
                               os.path.join(work, "rss-state"), "--ca-fingerprint", fp),
                         stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("event: token"):
            break
    renewals = 0
    deadline = time.monotonic() + 25
    # Keep it running through a few renewals (lifetime 10 s: one each ~5 s).
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith("event: renewed"):
            renewals += 1
            if renewals >= 3:
                break
    status = open(f"/proc/{p.pid}/status").read()
    p.terminate()
    p.wait()
    fields = {l.split(":")[0]: l.split(":")[1].strip() for l in status.splitlines() if ":" in l}
    stripped = os.path.join(work, "device-stripped")
    shutil.copy(device, stripped)
    sh("strip", stripped)
    return {
        "renewals_seen": renewals,
        "VmRSS": fields.get("VmRSS"),
        "VmHWM": fields.get("VmHWM"),
        "threads": fields.get("Threads"),
        "binary_bytes": os.path.getsize(device),
        "stripped_bytes": os.path.getsize(stripped),
    }


def bench_fleet(fp, profile_path, count, soak):
    fleet = os.path.join(REL, "examples", "fleet")
    out = sh(*in_ns("hub", fleet, "--count", str(count), "--server", "https://127.0.0.1:8445",
                    "--ca-fingerprint", fp, "--admin-profile", profile_path, "--renewals", "2",
                    "--concurrency", "100", "--soak", soak))
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--fleet", type=int, default=1000)
    ap.add_argument("--soak", default="30s")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it builds network namespaces)")
    work = tempfile.mkdtemp(prefix="idprov-bench-")
    daemon = None
    try:
        lan_up()
        daemon, fp, profile, ca, profile_path = start_daemon(work, "10s")
        wall, inner = bench_start(work, fp, profile, ca, args.runs)
        print(f"device start -> token (wall, incl. process start and exit), {len(wall)} runs: "
              f"median {statistics.median(wall)*1e3:.0f} ms, min {min(wall)*1e3:.0f}, max {max(wall)*1e3:.0f}")
        if inner:
            print(f"  inside the process (main -> token): median {statistics.median(inner)*1e3:.0f} ms")
        print("device example:", json.dumps(bench_rss(work, fp, profile, ca)))
        print(bench_fleet(fp, profile_path, args.fleet, args.soak))
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait()
        lan_down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
