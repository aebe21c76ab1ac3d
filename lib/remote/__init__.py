"""qmail-remote: control files and routes (remoteconf, remoteroute), MX lookups (dnsmx), the SMTP client
session with its deadlines (smtpclient, remotesession), what a server offers (remotefeatures), qmail-rspawn's SMTP
connection cache across runs (conncache), and the TCP
timeout table (tcpto).
May import: util, config, rfc822.
"""
