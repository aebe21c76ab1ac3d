"""qmail-tcpserver, the tcpserver-compatible listener: options and binding (tcpserve), the environment it
gives (tcpenv), tcprules files (tcprules) and a rule's many variables set and taken out in one pass
(ruleenv), which programs it runs in pre-loaded workers (inprocess), the
pool of reused workers (tcppool), and tcp-env's ident query (remoteinfo).
May import: util, config, queue.
"""
