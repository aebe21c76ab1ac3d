"""The ground floor: what every program needs and nothing mail-specific.

Exit codes and their report texts (exits), errno texts and the temporary-errno set (errstr), reading and
writing raw descriptors with the one write-all loop (fdio), timed I/O for network peers (timedio),
netstrings (netstring), qmail's getopt (sgetopt), the wrapper every program runs under and
the signal dispositions of the programs they exec (program), the
launchers qmail-setup writes (launcher) and how to recognise our own installed programs (installed),
environment snapshots and the locale-coercion undo (envsnapshot), network servers' log lines (netlog),
splogger's line folding and priorities (syslogfold), waiting for a directory to change (dirwatch), and this
process's id, asked of the kernel once (procid), and opening a name that must be a regular file, never
through a planted link nor waiting on a FIFO (regularfile).
May import: the standard library only (per-connection paths use posix, not os).
"""
