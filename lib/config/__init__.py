"""Configuration as qmail reads it: control files (control), users/assign and its cdb (users), qmail-getpw's
passwd rules (getpw), access tables and tcprules-style cdbs (access), rcpthosts and morercpthosts (rcpthosts),
the .qmail language (dotqmail), making cdb files (cdbmake), this host's IP addresses (ipme), qmail-showctl's
descriptions (ctlreport), and the layout of a QMAILHOME tree (tree).
May import: util.
"""
