"""RFC 822 text: the address tokenizer (token822, token822list, addrlist), reading a message as header then body
(headerbody), and qmail's quoting of addresses and the one-line rule for lines built from them (quote).
May import: util.
"""
