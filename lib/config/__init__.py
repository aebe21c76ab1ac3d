"""Configuration as qmail reads it: control files (control), users/assign and its cdb (users), qmail-getpw's
passwd rules (getpw), access tables and tcprules-style cdbs (access), rcpthosts and morercpthosts (rcpthosts),
the .qmail language (dotqmail), making cdb files (cdbmake), this host's IP addresses (ipme), qmail-showctl's
descriptions (ctlreport), the layout of a QMAILHOME tree (tree), and its service definitions and sendmail
links (services).
May import: util.
"""
