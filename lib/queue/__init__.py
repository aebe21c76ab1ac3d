"""qmail's queue: writing a message in qmail-queue's order (queue), the pool of pre-made files (queuepool),
queueing in the caller's own process (queuehere), the qmail-queue client (client), the maildrop boundary for
users who may not write the queue (maildrop), the F/T envelope (envelope), Received lines (received), the
views qmail-qread and qmail-qstat print (qreport), qmail-qctl's listing, queue shape and check (qlist,
qshape, qcheck), the administrator's changes: control requests, hold, release, delete, corrupt/ (qadmin), and the
repair of a stopped queue (qrepair).
May import: util, config, rfc822.
"""
