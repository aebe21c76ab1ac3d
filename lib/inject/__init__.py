"""qmail-inject: reading the message (injectinput), its header fields and envelope (injecthdr), and address
rewriting (injectrw).
May import: util, config, rfc822, queue.
"""
