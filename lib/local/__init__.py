"""qmail-local's deliveries: Maildir and mbox (maildir, mbox), the message descriptor re-read for each
instruction (msgfd), finding the user's .qmail file (qmailfile), the lines and environment every delivery
gets (delivery_env), what the dot-qmail helper programs share (runchild), qbiff's notice (biff), and scanning a Maildir for
maildir2mbox, maildirwatch and qmail-pop3d (maildirscan).
May import: util, config, rfc822, queue.
"""
