"""An adversarial audit of injection: the installed qmail-inject and sendmail against a private queue, fed what a
hostile local user, a web form behind `sendmail -F` or a tired administrator's control files give them.

Each test here failed before its fix (the defect is named in its docstring)."""

import os
import resource
import subprocess

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.inject.injectinput import Input, header
from pyqmail.lib.rfc822 import token822

from conftest import program, queued
from test_qmail_inject import only_message
from test_qmail_inject_rewrite import inject_env

FIELDS = {b"received", b"date", b"message-id", b"from", b"to", b"cc", b"subject"}


def header_fields(message):
    """Return the lower-cased names of a message's header fields (a line not starting with a blank starts one)."""
    head = message.split(b"\n\n", 1)[0]
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\n") if line[:1] not in (b" ", b"\t")]


def assert_no_forged_line(message):
    """The header holds only the fields qmail-inject writes, and no CR or NUL that a reader could split at."""
    head = message.split(b"\n\n", 1)[0]
    assert set(header_fields(message)) <= FIELDS, head
    assert b"\r" not in head and b"\0" not in head, head


def inject(tree, message, *args, **env):
    """Run the installed qmail-inject (queueing) as user joe unless env says otherwise; return it, finished."""
    return subprocess.run([program("qmail-inject"), *args], input=message,
                          env=inject_env(tree, **dict({"QMAILUSER": "joe"}, **env)), capture_output=True, timeout=30)


def limit_memory(megabytes):
    """preexec_fn: cap the address space, so that an unbounded allocation fails instead of swapping."""
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
    return apply


# ---- the environment never writes a header line of its own ----

@pytest.mark.parametrize("env", [
    {"QMAILNAME": "Joe\nBcc: evil@x.example"},
    {"MAILNAME": "Joe\rBcc: evil@x.example"},
    {"NAME": "Joe\r\nX-Forged: yes"},
    {"QMAILNAME": "Joe)\nX-Forged: yes", "QMAILINJECT": "c"},
    {"QMAILUSER": "joe\nX-Forged: yes", "QMAILSUSER": "joe"},
    {"QMAILHOST": "h.example\nX-Forged", "QMAILSHOST": "test.example"},
    {"QMAILIDHOST": "id.example>\nX-Forged: yes"},
    {"QMAILIDHOST": "id.example\r"},
])
def test_environment_with_line_breaks_forges_no_header_line(tree, env):
    """Defect: a CR or LF in the personal name, the From user or host (when QMAILSUSER/QMAILSHOST make the
    envelope) or QMAILIDHOST went into the From or Message-ID line raw (`"Joe\\<LF>Bcc: evil@x"`)."""
    p = inject(tree, b"To: a@x.example\nSubject: s\n\nbody\n", **env)
    assert (p.returncode, p.stderr) == (0, b"")
    mess, sender, rcpts = only_message(tree)
    assert_no_forged_line(mess)
    assert rcpts == [b"a@x.example"]


def test_sendmail_dash_capital_f_from_a_web_form_forges_no_header_line(tree):
    """Defect: PHP-style `sendmail -F "$name"` with a name holding a newline added a Bcc line of the sender's
    choosing to the queued message."""
    p = subprocess.run([program("sendmail"), "-F", "Joe\nBcc: evil@x.example", "-i", "a@x.example"],
                       input=b"Subject: s\n\nbody\n", env=inject_env(tree, USER="joe"), capture_output=True,
                       timeout=30)
    assert (p.returncode, p.stderr) == (0, b"")
    mess, _, rcpts = only_message(tree)
    assert_no_forged_line(mess)
    assert b'From: "Joe_Bcc: evil@x.example" <joe@test.example>\n' in mess
    assert rcpts == [b"a@x.example"]


# ---- control files as a tired administrator writes them ----

@pytest.mark.parametrize("files, sender, rcpt, idhost", [
    ({"me": b"me.example\r\n"}, b"joe@me.example", b"a@b.example", b"me.example"),
    ({"idhost": b"id.example\r\n"}, b"joe@test.example", b"a@b.example", b"id.example"),
    ({"idhost": b"id.example \r\n"}, b"joe@test.example", b"a@b.example", b"id.example"),
    ({"defaulthost": b"", "defaultdomain": b"\n"}, b"joe@test.example", b"a@b.test.example", b"test.example"),
    ({"defaulthost": b" \r\n", "idhost": b"\r\n"}, b"joe@test.example", b"a@b.example", b"test.example"),
    ({"defaulthost": b"host", "defaultdomain": b"dom.example"}, b"joe@host.dom.example", b"a@b.dom.example",
     b"test.example"),
])
def test_control_files_with_crlf_or_nothing_in_them(tree, files, sender, rcpt, idhost):
    """Defect: `me` or `idhost` saved with CRLF put a bare CR into every Message-ID; an empty `defaulthost`
    (or `defaultdomain`) made every sender `joe@.example`. A CR at the end of a value is dropped, and an
    empty value counts as no file (control/me, then the literal name)."""
    for name in ("defaulthost", "defaultdomain", "plusdomain", "idhost"):
        (tree / "control" / name).unlink(missing_ok=True)
    (tree / "control" / "defaultdomain").write_bytes(b"example\n")
    for name, data in files.items():
        (tree / "control" / name).write_bytes(data)
    p = inject(tree, b"To: a@b\n\nbody\n")
    assert (p.returncode, p.stderr) == (0, b"")
    mess, got_sender, rcpts = only_message(tree)
    assert (got_sender, rcpts) == (sender, [rcpt])
    assert_no_forged_line(mess)
    assert b".qmail@" + idhost + b">\n" in mess


# ---- every buffer bounded: the tokens of one field, the fields of one header ----

def test_an_address_field_of_millions_of_tokens_is_refused_in_bounded_memory(tree):
    """Defect: `To: a,a,a,...` of 14 MB (under the 16 MiB header bound) took 3.5 GB and two minutes; now a
    field of more than a million tokens is refused at once (exit 100), nothing queued."""
    message = b"To: " + b"a," * 3000000 + b"\nSubject: s\n\nbody\n"
    p = subprocess.run([program("qmail-inject")], input=message, env=inject_env(tree, QMAILUSER="joe"),
                       capture_output=True, timeout=60, preexec_fn=limit_memory(400))
    assert (p.returncode, p.stderr) == (100, b"qmail-inject: fatal: header field has more than 1000000 "
                                             b"address tokens: To\n")
    assert queued(tree) == {}


def test_a_list_of_100000_addresses_still_goes_through(tree):
    """The token bound leaves room for a 100,000-address To (600,000 tokens): all reach the envelope."""
    addresses = [b"user%d@x%d.example" % (i, i) for i in range(100000)]
    message = b"To: " + b",\n ".join(addresses) + b"\nSubject: s\n\nbody\n"
    p = subprocess.run([program("qmail-inject")], input=message, env=inject_env(tree, QMAILUSER="joe"),
                       capture_output=True, timeout=120, preexec_fn=limit_memory(400))
    assert (p.returncode, p.stderr) == (0, b"")
    _, _, rcpts = only_message(tree)
    assert rcpts == addresses[::-1]


def test_millions_of_tiny_header_fields_are_held_in_about_their_own_size(tree):
    """Defect: 2 million `a:` fields (6 MB) took 300 MB held as one object each; the header kept is one buffer."""
    message = b"a:\n" * 2000000 + b"\nbody\n"
    p = subprocess.run([program("qmail-inject"), "t@x.example"], input=message,
                       env=inject_env(tree, QMAILUSER="joe"), capture_output=True, timeout=120,
                       preexec_fn=limit_memory(200))
    assert (p.returncode, p.stderr) == (0, b"")
    mess, _, rcpts = only_message(tree)
    assert header_fields(mess).count(b"a") == 2000000 and mess.endswith(b"a:\n\nbody\n")


# ---- sendmail -f as other MTAs' programs pass it ----

def sendmail(tree, message, *args):
    """Run the installed sendmail as user joe; return it, finished."""
    return subprocess.run([program("sendmail"), *args], input=message, env=inject_env(tree, USER="joe"),
                          capture_output=True, timeout=30)


@pytest.mark.parametrize("given, sender, from_", [
    ("", b"", b"From: joe@test.example\n"),
    ("<>", b"", b"From: joe@test.example\n"),
    ("<bounces@x.example>", b"bounces@x.example", b"From: bounces@x.example\n"),
    ("-oi@x.example", b"-oi@x.example", b"From: -oi@x.example\n"),
])
def test_sendmail_null_and_bracketed_senders(tree, given, sender, from_):
    """Defect: `sendmail -f ''` (a vacation program's null sender) gave `From: ""@test.example`, and `-f '<>'`
    (Sendmail's and Postfix's null sender) the envelope sender `<>@test.example`; `-f '<a@b>'` kept its
    brackets in the envelope. A sender starting with `-` stays a sender, never an option."""
    p = sendmail(tree, b"Subject: s\n\nbody\n", "-i", "-f", given, "a@x.example")
    assert (p.returncode, p.stderr) == (0, b"")
    mess, got, rcpts = only_message(tree)
    assert (got, rcpts) == (sender, [b"a@x.example"])
    assert from_ in mess


# ---- Bcc never reaches the queue, however it is written ----

@pytest.mark.parametrize("bcc", [
    b"BCC : s1@x.example\n", b"bcc:s1@x.example\n", b"Bcc:\n s1@x.example,\n\ts2@x.example\n",
    b"Bcc: s1@x.example\r\n", b"Bcc\t: (s1@x.example) \"s2@x.example\"\n", b"Bcc: undisclosed: s1@x.example;\n",
    b"Resent-Bcc: s1@x.example\nResent-To: t@x.example\n",
])
@pytest.mark.parametrize("where", ["first", "last", "at the end of input"])
def test_bcc_in_any_spelling_or_place_is_removed(tree, bcc, where):
    """No defect found: each spelling of a Bcc (folded, CRLF, blanks before the colon, a group, resent) is
    removed wherever it stands; the test guards qmail-header(5)'s removal, which no other test checks folded."""
    if where == "first":
        message = bcc + b"To: t@x.example\n\nbody\n"
    elif where == "last":
        message = b"To: t@x.example\n" + bcc + b"\nbody\n"
    else:
        message = b"To: t@x.example\n" + bcc.rstrip(b"\r\n")
    p = inject(tree, message)
    assert (p.returncode, p.stderr) == (0, b"")
    mess, _, rcpts = only_message(tree)
    assert b"s1@" not in mess and b"s2@" not in mess and b"bcc" not in mess.lower(), mess
    assert b"t@x.example" in rcpts or b"Resent" not in bcc  # the Bcc addresses themselves stay envelope recipients


def test_an_unparsable_field_of_megabytes_is_shown_cut_short(tree):
    """Defect: the `unable to parse this line` message repeated the whole field, up to 16 MiB of stderr; now the
    first 1000 bytes, then `...`."""
    p = inject(tree, b"To: " + b"(" * 2000000 + b"\n\nbody\n")
    assert p.returncode == 100
    assert p.stderr == b"qmail-inject: fatal: unable to parse this line:\nTo: " + b"(" * 996 + b"...\n"
    assert queued(tree) == {}


def test_a_field_of_millions_of_continuation_lines_is_held_in_about_its_own_size(tree):
    """Defect: a field folded over 5 million blank continuation lines (10 MB) was gathered as a list of lines:
    700 MB; now one buffer."""
    message = b"X-Folded: a\n" + b" \n" * 5000000 + b"\nbody\n"
    p = subprocess.run([program("qmail-inject"), "t@x.example"], input=message,
                       env=inject_env(tree, QMAILUSER="joe"), capture_output=True, timeout=120,
                       preexec_fn=limit_memory(200))
    assert (p.returncode, p.stderr) == (0, b"")
    mess, _, rcpts = only_message(tree)
    assert b"\nX-Folded: a\n" + b" \n" * 5000000 + b"\nbody\n" in mess and rcpts == [b"t@x.example"]


def test_qmailmftfile_is_read_to_a_bound(tree):
    """Defect: QMAILMFTFILE=/dev/zero was read whole: qmail-inject grew until memory ran out."""
    p = subprocess.run([program("qmail-inject"), "t@x.example"], input=b"To: l@x.example\n\nbody\n",
                       env=inject_env(tree, QMAILUSER="joe", QMAILMFTFILE="/dev/zero"), capture_output=True,
                       timeout=60, preexec_fn=limit_memory(200))
    assert (p.returncode, p.stderr) == (111, b"qmail-inject: fatal: QMAILMFTFILE is longer than 1048576 bytes\n")
    assert queued(tree) == {}


# ---- the parsers under the bounds, as properties ----

@given(st.binary(max_size=60).map(lambda b: b.replace(b"\\", b"")) | st.lists(
    st.sampled_from([b"a", b",", b" ", b"(c)", b'"q"', b"[l]", b"<", b">", b"@", b"(", b'"', b"\\"])
).map(b"".join), st.integers(0, 12))
def test_token_bound_changes_nothing_below_it(data, limit):
    """parse(data, limit) is parse(data) when that has at most limit tokens, and refuses when it has more."""
    whole = token822.parse(data)
    try:
        bounded = token822.parse(data, limit)
    except token822.TooManyTokens:
        assert whole is None or len(whole) > limit
        return
    assert bounded == whole
    assert whole is None or len(whole) <= limit


@given(st.lists(st.sampled_from([b"a: b\n", b" c\n", b"\tc\n", b"From x\n", b"\n", b"body\n", b"x"]),
                max_size=30), st.integers(1, 7))
def test_header_fields_are_gathered_whole_whatever_the_reads(lines, size):
    """Each field reaches on_field with all its continuation lines, and the body starts where it did."""
    from pyqmail.lib.inject import injectinput
    data = b"".join(lines)
    r, w = os.pipe()
    os.write(w, data)  # at most 210 bytes: the pipe holds it
    os.close(w)
    fields = []
    chunk, injectinput.CHUNK = injectinput.CHUNK, size  # reads cut the lines anywhere
    try:
        start = header(Input(r), fields.append)
    finally:
        injectinput.CHUNK = chunk
        os.close(r)
    expected, body = [], b""
    text = data + (b"\n" if data and not data.endswith(b"\n") else b"")
    for line in text.splitlines(keepends=True):
        if expected and line[:1] in (b" ", b"\t"):
            expected[-1] += line
        elif line == b"\n":
            body = line
            break
        elif line.startswith(b"From "):
            expected.append(b"MBOX-Line: " + line)
        elif line.find(b":") > 0 and b" " not in line[:line.find(b":")]:
            expected.append(line)
        else:
            body = b"\n" + line
            break
    assert fields == expected
    assert start == body


def test_a_header_field_longer_than_the_bound_is_refused(tree):
    """No defect: one field over 16 MiB, or a continuation line of one, is refused; no other test checks it.
    (A headerless message whose first line is over 16 MiB is refused too: until its newline or a colon comes,
    that line could still be a field such as a Bcc, so it cannot be streamed as body.)"""
    for message in (b"X-Big: " + b"a" * (17 << 20) + b"\n\nbody\n",
                    b"X-Big: a\n " + b"a" * (17 << 20) + b"\n\nbody\n"):
        p = inject(tree, message, "t@x.example")
        assert (p.returncode, p.stderr) == (100, b"qmail-inject: fatal: message header longer than 16777216 bytes\n")
    assert queued(tree) == {}
