"""qmail-lspawn's and qmail-rspawn's side of qmail-send: the spawn protocol on the pipes (spawnproto), running
deliveries concurrently and reporting them (spawner), and reused qmail-local and qmail-remote workers (localworkers).
May import: util, config, queue.
"""
