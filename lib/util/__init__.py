"""The ground floor: what every program needs and nothing mail-specific.

Exit codes and their report texts (exits), errno texts and the temporary-errno set (errstr), reading and
writing raw descriptors with the one write-all loop (fdio), timed I/O for network peers (timedio),
netstrings, qmail's getopt (sgetopt), the wrapper every program runs under (program), the launchers
qmail-setup writes and how to recognise our own installed programs (launcher), environment snapshots and
the locale-coercion undo (envsnapshot), and network servers' log lines (netlog).
May import: the standard library only (per-connection paths use posix, not os).
"""
