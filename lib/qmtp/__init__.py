"""qmail-qmtpd: QMTP packages (qmtp), their I/O (qmtpio) and the server's policy (qmtppolicy).
May import: util, config, rfc822, queue.
"""
