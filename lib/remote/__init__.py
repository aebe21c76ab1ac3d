"""qmail-remote: control files and routes (remoteconf, remoteroute), MX lookups (dnsmx), the SMTP client
session with its deadlines (smtpclient, remotesession), what a server offers (remotefeatures), the TCP timeout
table (tcpto), and the SMTP connection cache qmail-rspawn keeps across qmail-remote runs (conncache).
May import: util, config, rfc822.
"""
