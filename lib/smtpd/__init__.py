"""qmail-smtpd: reading commands with bounded lines (smtpio), parsing them (smtpcmd), the configuration
(smtpconf), the recipient check (smtprcpt), DATA (smtpdata), queueing (smtpqueue), reply texts (smtpreply),
STARTTLS (smtptls) and AUTH (smtpauth).
May import: util, config, rfc822, queue.
"""
