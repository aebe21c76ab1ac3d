"""lib/util/fdio: the one write-all loop and the one splitter of NUL-ended records (qmail-send's spawner reports,
qmail-clean's commands)."""

import os

from hypothesis import given, strategies as st

from pyqmail.lib.util.fdio import nul_records, write_all

RECORD = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"x"))


def model(records, limit, head):
    """The records as they were sent, each cut to limit bytes."""
    return [r[:limit] for r in records]


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=1), RECORD), max_size=8), st.integers(2, 30),
       st.sampled_from([0, 1]), st.lists(st.integers(1, 50), max_size=10))
def test_records_split_anywhere_come_out_whole_and_bounded(pairs, limit, head, cuts):
    records = [(first if head else first.replace(b"\0", b"y")) + rest for first, rest in pairs]
    stream = b"".join(r + b"\0" for r in records)
    pending, got, pos = bytearray(), [], 0
    for cut in cuts:
        got += nul_records(pending, stream[pos:pos + cut], limit, head)
        pos += cut
    got += nul_records(pending, stream[pos:], limit, head)
    assert got == model(records, limit, head)
    assert pending == bytearray()


def test_a_leading_nul_is_data_when_head_says_so():
    pending = bytearray()
    assert nul_records(pending, b"\0K ok\0\x01Z", 100, head=1) == [b"\0K ok"]
    assert nul_records(pending, b" later\0", 100, head=1) == [b"\x01Z later"]
    assert nul_records(bytearray(), b"\0a\0", 100) == [b"", b"a"]


def test_write_all_writes_everything_through_short_writes():
    r, w = os.pipe()
    data = os.urandom(300000)  # more than a pipe holds: the writer is drained by a child
    pid = os.fork()
    if pid == 0:
        os.close(w)
        got = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            got += chunk
        os._exit(0 if got == data else 1)
    os.close(r)
    write_all(w, memoryview(data))
    os.close(w)
    assert os.waitpid(pid, 0)[1] == 0
