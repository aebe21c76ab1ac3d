"""Acceptance latency for the end-to-end benchmark, which qmqp-source does not report.

While qmqp-source runs, a thread sends its own QMQP messages, one at a time, each on a new connection,
and times each from connect() to the server's complete reply (the queue file is fsynced by then). It
sends one probe per EVERY messages qmqp-source has had accepted (at most one per GAP seconds), so the
probes add the same 1/EVERY share of traffic to every system and give about messages/EVERY samples.
The probes are delivered like the others: a run waits for messages + probes accepted in the Maildir.
"""

import socket
import threading
import time

EVERY = 20
GAP = 0.02


def netstring(data):
    """data as a netstring."""
    return b"%d:%s," % (len(data), data)


def qmqp_request(sender, recipient, size=2048):
    """A QMQP request carrying one message of about `size` bytes from sender to recipient."""
    head = b"From: <%s>\nTo: <%s>\nSubject: acceptance latency probe\n\n" % (sender.encode(), recipient.encode())
    body = (b"x" * 71 + b"\n") * max(1, (size - len(head)) // 72)
    return netstring(netstring(head + body) + netstring(sender.encode()) + netstring(recipient.encode()))


def read_reply(sock, limit=1024):
    """Read one netstring reply; return its payload (b"" if the connection closed early)."""
    data = b""
    while True:
        length, colon, rest = data.partition(b":")
        if colon and length.isdigit() and len(rest) > int(length):
            return rest[:int(length)]
        chunk = sock.recv(limit)
        if not chunk or len(data) > limit:
            return b""
        data += chunk


def percentile(values, q):
    """The q-th percentile (0..100) of values by the nearest-rank method (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class LatencyProbe:
    """Sends probes to 127.0.0.1:port in a thread while progress() (messages accepted so far) grows."""

    def __init__(self, port, progress, sender, recipient):
        self.port, self.progress = port, progress
        self.request = qmqp_request(sender, recipient)
        self.times, self.failed = [], []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        """Send a probe whenever EVERY more messages were accepted and GAP seconds have passed."""
        last_count, last_time = 0, 0.0
        while not self.done.is_set():
            count, now = self.progress(), time.monotonic()
            if count - last_count >= EVERY and now - last_time >= GAP:
                last_count, last_time = count, now
                self.send()
            else:
                time.sleep(0.005)

    def send(self):
        """One probe: connect, send, read the reply; record the time or the failure."""
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
                s.sendall(self.request)
                reply = read_reply(s)
        except OSError as e:
            self.failed.append(str(e))
            return
        if reply.startswith(b"K"):
            self.times.append(time.perf_counter() - t0)
        else:
            self.failed.append(reply.decode(errors="replace") or "connection closed without a reply")

    def stop(self):
        """Stop probing; return {"accepted", "failed", "p50_ms", "p99_ms", "max_ms"}."""
        self.done.set()
        self.thread.join()
        ms = [1000 * t for t in self.times]
        return {"accepted": len(ms), "failed": len(self.failed), "p50_ms": percentile(ms, 50),
                "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else None,
                "errors": self.failed[:3]}
