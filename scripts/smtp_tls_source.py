"""smtp-source's load with STARTTLS, for scripts/bench-smtp: Postfix's smtp-source has no TLS.

Usage: python scripts/smtp_tls_source.py [-c] -s SESSIONS -m MESSAGES [-r RECIPIENTS] -l LENGTH -M HELO
       -f FROM -t TO HOST:PORT

SESSIONS threads each open connections in turn, one message per connection as smtp-source does: greeting,
EHLO, STARTTLS, the handshake (TLS 1.2 or later, the certificate not verified: both servers are seen
alike), EHLO, MAIL, RCPT (TO, then 2TO ... RECIPIENTS TO, as smtp-source -r names them), DATA with LENGTH
bytes of body in 78-byte lines, QUIT. No pipelining, no session resumption. With -c, the count of messages
accepted so far is printed as smtp-source -c prints it. Exit 0 when every message got its 250, 1 otherwise.
"""

import argparse
import socket
import ssl
import sys
import threading


class Failed(Exception):
    """The server answered something unexpected."""


def session(host, port, ctx, args, rcpts, body):
    """One connection, one message; raise Failed on an unexpected reply."""
    with socket.create_connection((host, port), timeout=60) as plain:
        f = plain.makefile("rb")
        expect(f, b"220")
        plain.sendall(b"EHLO %s\r\n" % args.M.encode())
        expect(f, b"250")
        plain.sendall(b"STARTTLS\r\n")
        expect(f, b"220")
        f.close()
        with ctx.wrap_socket(plain) as tls:
            f = tls.makefile("rb")
            for line, code in [(b"EHLO %s" % args.M.encode(), b"250"), (b"MAIL FROM:<%s>" % args.f.encode(), b"250")] + \
                    [(b"RCPT TO:<%s>" % r, b"250") for r in rcpts] + [(b"DATA", b"354")]:
                tls.sendall(line + b"\r\n")
                expect(f, code)
            tls.sendall(body)
            expect(f, b"250")
            tls.sendall(b"QUIT\r\n")
            expect(f, b"221")
            f.close()


def expect(f, code):
    """Read one whole reply; Failed unless it has the code."""
    while True:
        line = f.readline()
        if line[:3] != code:
            raise Failed("%s expected, got %r" % (code.decode(), line))
        if line[3:4] != b"-":
            return


def main():
    """Run the sessions; print the counter with -c; exit 0 if every message was accepted."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag in ("s", "m", "r", "l"):
        p.add_argument("-" + flag, type=int, default=1)
    for flag in ("M", "f", "t"):
        p.add_argument("-" + flag, default="localhost")
    p.add_argument("-c", action="store_true")
    p.add_argument("server")
    args = p.parse_args()
    host, _, port = args.server.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    rcpts = [args.t.encode()] + [b"%d%s" % (n, args.t.encode()) for n in range(2, args.r + 1)]
    line = b"X" * 76 + b"\r\n"
    body = b"From: <%s>\r\nTo: <%s>\r\n\r\n" % (args.f.encode(), args.t.encode()) + \
        line * (args.l // 78) + b"X" * (args.l % 78) + b"\r\n.\r\n"
    lock, state = threading.Lock(), {"left": args.m, "done": 0, "failed": None}

    def worker():
        while True:
            with lock:
                if state["left"] <= 0 or state["failed"]:
                    return
                state["left"] -= 1
            try:
                session(host, int(port), ctx, args, rcpts, body)
            except (OSError, Failed) as e:
                with lock:
                    state["failed"] = state["failed"] or str(e)
                return
            with lock:
                state["done"] += 1
                if args.c:
                    sys.stdout.write("%d\r" % state["done"])
                    sys.stdout.flush()
    threads = [threading.Thread(target=worker) for _ in range(args.s)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if args.c:
        print()
    if state["failed"]:
        print("smtp_tls_source: %s" % state["failed"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
