"""qmail-tcpserver, the tcpserver-compatible listener: options and binding (tcpserve), the environment it
gives (tcpenv), tcprules files (tcprules), which programs it runs in pre-loaded workers (inprocess), and the
pool of reused workers (tcppool).
May import: util, config, queue.
"""
