#!/usr/bin/env python3
"""faultproxy: a fault-injecting HTTP proxy for singularity-oci's reliability tests.

Test code only. It listens on 127.0.0.1 (never anything else) and forwards every request to one
upstream registry on 127.0.0.1, except when a rule says to break the answer instead.

usage: faultproxy.py --upstream 127.0.0.1:PORT --rules FILE --log FILE [--port N]

It prints "PORT <n>" on stdout once it listens, then serves until killed.

FILE (JSON) is re-read whenever its mtime changes, so a test can switch faults without a restart:

  {"rules": [{"match": "/blobs/", "method": "GET", "fault": "status", "status": 503, "times": 2},
             ...]}

A rule applies to a request whose path contains `match` (and whose method equals `method`, when
given). `times` bounds how often it fires (absent or -1: forever); the first rule that matches and
still has firings left wins. Faults:

  status      answer `status` (500, 502, 503, 404, ...) with a short body, no forwarding
  reset       forward, send the headers and `after` bytes of the body (default: half), then
              reset the connection (SO_LINGER 0): a connection reset mid-blob
  trickle     forward, but send the body `chunk` bytes every `interval` seconds
  badlength   forward, but announce Content-Length + `delta` (default +1000; negative allowed):
              with a larger length the connection closes early, with a smaller one the client
              reads a truncated body
  redirect    answer 307 to the same path with a counter appended: a redirect loop
  authloop    answer 401 with a Bearer challenge whose realm is this proxy's /token endpoint
              (which hands out a token); the retried request gets 401 again, forever

Every request is logged to --log as one JSON line: method, path, range, fault, status, bytes.
"""

import argparse
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


class Rules:
    """The rule file, reloaded on change; firing counts survive reloads of an unchanged rule."""

    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.rules = []
        self.fired = {}
        self.lock = threading.Lock()

    def _reload(self):
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self.rules, self.mtime = [], None
            return
        if mtime == self.mtime:
            return
        with open(self.path, encoding="utf-8") as f:
            doc = json.load(f)
        self.rules = doc.get("rules", [])
        self.fired = {}
        self.mtime = mtime

    def pick(self, method, path):
        with self.lock:
            self._reload()
            for i, r in enumerate(self.rules):
                if r.get("match", "") not in path:
                    continue
                if r.get("method") and r["method"] != method:
                    continue
                times = r.get("times", -1)
                n = self.fired.get(i, 0)
                if times >= 0 and n >= times:
                    continue
                self.fired[i] = n + 1
                return r
            return None


class Log:
    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()

    def write(self, **rec):
        rec["t"] = round(time.time(), 3)
        with self.lock:
            self.f.write(json.dumps(rec, sort_keys=True) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, fmt, *args):  # quiet: the JSON log says everything
        pass

    def do_GET(self):
        self.handle_any()

    def do_HEAD(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_PATCH(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    # -------------------------------------------------------------------------------------------

    def handle_any(self):
        srv = self.server
        if self.path.startswith("/token"):
            self.reply(200, json.dumps({"token": "faultproxy-token"}).encode(), "application/json")
            self.record(None, 200, 0)
            return
        rule = srv.rules.pick(self.command, self.path)
        fault = rule.get("fault") if rule else None
        if fault == "status":
            status = int(rule.get("status", 503))
            self.reply(status, b'{"errors":[{"code":"UNAVAILABLE","message":"faultproxy"}]}')
            self.record(fault, status, 0)
            return
        if fault == "redirect":
            base = self.path.split("?")[0]
            n = srv.counter()
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{srv.server_port}{base}?loop={n}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.record(fault, 307, 0)
            return
        if fault == "authloop":
            self.send_response(401)
            realm = f"http://127.0.0.1:{srv.server_port}/token"
            self.send_header(
                "WWW-Authenticate",
                f'Bearer realm="{realm}",service="faultproxy",scope="repository:x:pull,push"',
            )
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"faultproxy"}]}'
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.record(fault, 401, 0)
            return
        self.forward(rule, fault)

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def record(self, fault, status, nbytes):
        self.server.log.write(
            method=self.command,
            path=self.path,
            range=self.headers.get("Range"),
            auth=bool(self.headers.get("Authorization")),
            fault=fault,
            status=status,
            bytes=nbytes,
        )

    def forward(self, rule, fault):
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        # A list, not a dict: clients send several Accept headers and all of them matter.
        headers = [
            (k, v)
            for k, v in self.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length")
        ]
        up = http.client.HTTPConnection(*srv.upstream, timeout=60)
        try:
            up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            up.putheader("Host", f"{srv.upstream[0]}:{srv.upstream[1]}")
            for k, v in headers:
                up.putheader(k, v)
            if body is not None:
                up.putheader("Content-Length", str(len(body)))
            up.endheaders(body)
            resp = up.getresponse()
        except OSError as e:
            self.reply(502, json.dumps({"error": str(e)}).encode())
            self.record("upstream-error", 502, 0)
            return
        clen = resp.getheader("Content-Length")
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            kl = k.lower()
            if kl in HOP_BY_HOP or kl == "content-length":
                continue
            if kl == "location" and v.startswith(f"http://{srv.upstream[0]}:{srv.upstream[1]}"):
                v = f"http://127.0.0.1:{srv.server_port}" + v.split(str(srv.upstream[1]), 1)[1]
            self.send_header(k, v)
        announced = int(clen) if clen is not None else None
        if fault == "badlength" and announced is not None:
            announced = max(0, announced + int(rule.get("delta", 1000)))
        if announced is not None:
            self.send_header("Content-Length", str(announced))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            up.close()
            self.record(fault, resp.status, 0)
            return
        sent = 0
        real_len = int(clen) if clen is not None else None
        cut = None
        if fault == "reset":
            cut = int(rule.get("after", (real_len or 0) // 2))
        chunk = int(rule.get("chunk", 65536)) if fault == "trickle" else 65536
        interval = float(rule.get("interval", 0.05)) if fault == "trickle" else 0.0
        try:
            while True:
                want = chunk
                if cut is not None:
                    want = min(want, cut - sent)
                    if want <= 0:
                        break
                if announced is not None and fault == "badlength":
                    want = min(want, announced - sent)
                    if want <= 0:
                        break
                data = resp.read(want)
                if not data:
                    break
                self.wfile.write(data)
                self.wfile.flush()
                sent += len(data)
                if interval:
                    time.sleep(interval)
        except OSError:
            self.close_connection = True
        finally:
            up.close()
        if cut is not None:
            self.hard_reset()
        elif fault == "badlength" and announced is not None and announced != real_len:
            # The framing is now wrong either way: never reuse this connection.
            self.close_connection = True
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.record(fault, resp.status, sent)

    def hard_reset(self):
        """Close with SO_LINGER 0 so the peer sees ECONNRESET, not a clean EOF."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
        except OSError:
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, upstream, rules, log):
        super().__init__(("127.0.0.1", port), Handler)
        self.upstream = upstream
        self.rules = rules
        self.log = log
        self._n = 0
        self._lock = threading.Lock()

    def counter(self):
        with self._lock:
            self._n += 1
            return self._n

    def handle_error(self, request, client_address):  # client went away: not our business
        pass


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("FATAL: faultproxy: upstream must be on 127.0.0.1")
    return "127.0.0.1", int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = Server(a.port, parse_hostport(a.upstream), Rules(a.rules), Log(a.log))
    print(f"PORT {srv.server_port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
