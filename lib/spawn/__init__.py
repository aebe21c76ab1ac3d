"""qmail-lspawn's and qmail-rspawn's side of qmail-send: the spawn protocol on the pipes (spawnproto), running
deliveries concurrently and reporting them (spawner), reused qmail-local and qmail-remote workers (localworkers), and
qmail-lspawn's passwd lookups in helper processes, not waited for, with a deadline (passwdlookup).
May import: util, config, queue.
"""
