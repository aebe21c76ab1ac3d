"""RFC 822 text: the one address tokenizer (token822), address lists walked as qmail does (token822list) and the
plain addresses of a header value on top of both (addrlist), reading a message as header then body (headerbody),
and qmail's quoting of addresses and the one-line rule for lines built from them (quote).
May import: util.
"""
