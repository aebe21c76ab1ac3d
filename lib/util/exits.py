"""qmail's exit codes and the D/Z texts callers of qmail-queue report.

qmail-queue's codes are listed in qmail-queue(8) (and, for a QMQP client's, qmail-qmqpc(8)); the texts are
those of qmail.c's qmail_close; the QLX_ codes are qmail's qlx.h.
"""

from __future__ import annotations

# every qmail program's own convention: 0 success, 100 permanent failure, 111 temporary failure
PERM_FAILURE = 100
TEMP_FAILURE = 111

QUEUED = 0
ADDR_TOO_LONG = 11
PERM_REFUSED = 31
NOMEM = 51
TIMEOUT = 52
WRITE_ERROR = 53
READ_ERROR = 54
CONFIG = 55
NETWORK = 56
HOME = 61
QUEUE_DIR = 62
QUEUE_PID = 63
QUEUE_MESS = 64
QUEUE_INTD = 65
QUEUE_TODO = 66
TEMP_REFUSED = 71
CONN_TIMEOUT = 72
CONN_REJECTED = 73
CONN_FAILED = 74
BUG = 81
CUSTOM = 82
ENVELOPE_FORMAT = 91
EXEC_FAILED = 120
ADDR_TOO_LONG_COMPAT = 115  # qmail.c reads it as ADDR_TOO_LONG too (its "compatibility" case)
PERMANENT_FIRST, PERMANENT_LAST = 11, 40  # the codes qmail.c counts as permanent failures

# qmail-lspawn's delivery children exit with these (qmail's qlx.h); 0, 111 and 100 are qmail-local's own.
# qmail-getpw shares QLX_NFS and QLX_NOALIAS, and exits GETPW_USAGE when it is given no local part.
QLX_USAGE = 112
QLX_ROOT = 113
QLX_NFS = 115
QLX_NOALIAS = 116
QLX_CDB = 117
QLX_SYS = 118
QLX_NOMEM = 119
QLX_EXECSOFT = 120
QLX_EXECPW = 121
QLX_EXECHARD = 126
GETPW_USAGE = 100

# what qmail-lspawn reports to qmail-send for each of them (qmail-lspawn.c's report())
QLX_TEXTS = {
    QLX_CDB: b"ZTrouble reading users/cdb in qmail-lspawn.\n",
    QLX_NOMEM: b"ZOut of memory in qmail-lspawn.\n",
    QLX_SYS: b"ZTemporary failure in qmail-lspawn.\n",
    QLX_NOALIAS: b"ZUnable to find alias user!\n",
    QLX_ROOT: b"ZNot allowed to perform deliveries as root.\n",
    QLX_USAGE: b"ZInternal qmail-lspawn bug.\n",
    QLX_NFS: b"ZNFS failure in qmail-local.\n",
    QLX_EXECHARD: b"DUnable to run qmail-local.\n",
    QLX_EXECSOFT: b"ZUnable to run qmail-local.\n",
    QLX_EXECPW: b"ZUnable to run qmail-getpw.\n",
}

_QQ_TEXT = {
    ADDR_TOO_LONG: "Denvelope address too long for qq (#5.1.3)",
    ADDR_TOO_LONG_COMPAT: "Denvelope address too long for qq (#5.1.3)",
    PERM_REFUSED: "Dmail server permanently rejected message (#5.3.0)",
    NOMEM: "Zqq out of memory (#4.3.0)",
    TIMEOUT: "Zqq timeout (#4.3.0)",
    WRITE_ERROR: "Zqq write error or disk full (#4.3.0)",
    READ_ERROR: "Zqq read error (#4.3.0)",
    CONFIG: "Zqq unable to read configuration (#4.3.0)",
    NETWORK: "Zqq trouble making network connection (#4.3.0)",
    HOME: "Zqq trouble in home directory (#4.3.0)",
    QUEUE_DIR: "Zqq trouble creating files in queue (#4.3.0)",
    QUEUE_PID: "Zqq trouble creating files in queue (#4.3.0)",
    QUEUE_MESS: "Zqq trouble creating files in queue (#4.3.0)",
    QUEUE_INTD: "Zqq trouble creating files in queue (#4.3.0)",
    QUEUE_TODO: "Zqq trouble creating files in queue (#4.3.0)",
    TEMP_REFUSED: "Zmail server temporarily rejected message (#4.3.0)",
    CONN_TIMEOUT: "Zconnection to mail server timed out (#4.4.1)",
    CONN_REJECTED: "Zconnection to mail server rejected (#4.4.1)",
    CONN_FAILED: "Zcommunication with mail server failed (#4.4.2)",
    BUG: "Zqq internal bug (#4.3.0)",
    ENVELOPE_FORMAT: "Zqq internal bug (#4.3.0)",
    EXEC_FAILED: "Zunable to exec qq (#4.3.0)",
}

QQ_CRASHED = "Zqq crashed (#4.3.0)"
QQ_WAITPID_SURPRISE = "Zqq waitpid surprise (#4.3.0)"
CUSTOM_MAX = 255


def qq_text(code: int, custom: bytes = b"") -> str:
    """Return qmail.c's result string for a qmail-queue exit code ("" on success)."""
    if code == QUEUED:
        return ""
    if code == CUSTOM and len(custom) > 2 and custom[:1] in (b"D", b"Z"):
        return custom[:CUSTOM_MAX].decode("latin-1").rstrip("\n")
    if code in _QQ_TEXT:
        return _QQ_TEXT[code]
    if PERMANENT_FIRST <= code <= PERMANENT_LAST:
        return "Dqq permanent problem (#5.3.0)"
    return "Zqq temporary problem (#4.3.0)"


class Exit(Exception):
    """Raised to end a program with a given exit code and an optional message for fd 2."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
