"""qmail-tcpserver, the tcpserver-compatible listener: options and binding (tcpserve), the environment it
gives (tcpenv), tcprules files (tcprules), which programs it runs in pre-loaded workers (inprocess), the
pool of reused workers (tcppool), and tcp-env's ident query (remoteinfo).
May import: util, config, queue.
"""
