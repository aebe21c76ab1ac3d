"""POP3: qmail-popup's and qmail-pop3d's command lines, bounded and timed (pop3io), qmail-popup's
authorization state machine and the checkpassword hand-over on fd 3 (popup), qmail-pop3d's maildir
listing, numbering, deletion on QUIT and RETR/TOP output (pop3d), and qmail-checkpassword's password
file, scrypt and shadow checks and the change of user (checkpw), and qmail-popup's STLS handshake with the bounded
TLS relay to the checkpassword chain (tlsrelay).
May import: util, config, local (its Maildir scanning).
"""
