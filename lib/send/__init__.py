"""qmail-send: the todo pass (todo), the channels and their delivery jobs (channel, sendchannel), messages and
their recipients kept in memory (sendmessages, inmemory), address rewriting (rewrite), retry schedules (retry,
timequeue), bounces and VERP (bounce, verp), clean-up (sendclean), start-up (sendstart), log lines (sendlog),
the qmgr scheduler's pure core and its controls (qmgr, qmgrconf: Postfix qmgr's windows, dead destinations,
backoff and preemption), the remote channel's per-destination windows and dead cache built on it (destinations),
qmail-qctl's control socket and damaged messages set aside (sendcontrol), finished files unlinked in threads
(unlinker), and what those parts see of the whole (sendstate, for the type checker).
May import: util, config, rfc822, queue, spawn (its protocol only), remote (its smtproutes lookup only).
"""
