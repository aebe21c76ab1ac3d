"""qmail-qmqpd's control files and their defaults (Postfix qmqpd's parameters, qmail's deadline): qmail-qmqpd(8)."""

from __future__ import annotations

from pyqmail.lib.config import control
from pyqmail.lib.qmqp.qmqp import ENVELOPE_MAX, HARD_MAX

DEFAULTS = {
    "qmqpdmaxbytes": 10240000,  # Postfix message_size_limit; 0 = only qmail's 200000000 cap
    "qmqpdmaxrcpt": 10000,  # recipients per request; 0 = only the ENVELOPE_MAX bytes of recipients
    "qmqpdmaxhops": 50,  # Postfix hopcount_limit; Received: and Delivered-To: lines; 0 = no limit
    "qmqpdtimeout": 300,  # Postfix qmqpd_timeout, per read
    "qmqpddeadline": 3600,  # qmail-qmqpd's whole-session alarm
    "qmqpderrordelay": 1,  # Postfix qmqpd_error_delay, before any negative reply
    "qmqpdsoftbounce": 0,  # Postfix soft_bounce: 1 turns every D reply into Z
    "qmqpdclientportlogging": 0,  # Postfix qmqpd_client_port_logging
}
CLIENTS_CDB = "qmqpclients.cdb"
DEBUG_PEERS = "qmqpddebugpeers"


class Policy:
    """The settings one session runs with."""

    def __init__(self, values: dict[str, int], debug_peers: list[bytes]) -> None:
        self.maxbytes = values["qmqpdmaxbytes"] or HARD_MAX
        self.maxrcpt = values["qmqpdmaxrcpt"] or ENVELOPE_MAX  # a recipient takes 3 bytes at least
        self.maxhops = values["qmqpdmaxhops"]
        self.timeout = min(max(values["qmqpdtimeout"], 1), control.TIMEOUT_MAX)
        self.deadline = min(max(values["qmqpddeadline"], 1), control.TIMEOUT_MAX)  # alarm(2)'s C int
        self.error_delay = min(values["qmqpderrordelay"], control.TIMEOUT_MAX)
        self.soft_bounce = bool(values["qmqpdsoftbounce"])
        self.port_logging = bool(values["qmqpdclientportlogging"])
        self.debug_peers = debug_peers
        self.clients_cdb = control.path("control", CLIENTS_CDB)

    def final(self, text: str) -> str:
        """Return a reply text after soft bounce (D becomes Z)."""
        if self.soft_bounce and text.startswith("D"):
            return "Z" + text[1:]
        return text


def load() -> Policy:
    """Read the control files (again only once they change, in a reused worker); an unreadable one raises
    OSError (the caller answers Z)."""
    return control.memo("qmail-qmqpd", [*DEFAULTS, DEBUG_PEERS], read)


def read() -> Policy:
    """Read the control files into a Policy."""
    values = {name: control.readint(name, default) for name, default in DEFAULTS.items()}
    return Policy(values, control.readlist(DEBUG_PEERS))
