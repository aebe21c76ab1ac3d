"""qmail-lspawn's and qmail-rspawn's side of qmail-send: the spawn protocol on the pipes (spawnproto), running
deliveries concurrently and reporting them (spawner), and pre-forked qmail-local workers (localworkers).
May import: util, config, queue.
"""
