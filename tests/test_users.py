"""qmail-users(5): the assign parser, qmail-newu's users/cdb (read back with tinycdb), lspawn's lookup."""

import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from conftest import need, program, qenv
from pyqmail.lib.config import users

ASSIGN = (b"=joe:joe:1001:100:/home/joe:::\n"
          b"+joe-:joe:1001:100:/home/joe:-::\n"
          b"=Mixed:m:5:6:/m:::ignored after the sixth colon\n"
          b"+list-:lists:7:8:/l:-:list-:\n"
          b"+:alias:7790:2108:/var/qmail/alias:-::\n"
          b"=joe:second:1:1:/dup:::\n"
          b".\n"
          b"anything after the dot line is ignored\n")

# tinycdb's `cdb -d` dump: records in insertion order, `+klen,dlen:key->data`, a blank line at the end
DUMP = (b"+5,24:!joe\0->joe\x001001\x00100\x00/home/joe\0\0\n"
        b"+5,25:!joe-->joe\x001001\x00100\x00/home/joe\0-\0\n"
        b"+7,10:!mixed\0->m\x005\x006\x00/m\0\0\n"
        b"+6,20:!list-->lists\x007\x008\x00/l\0-\0list-\n"
        b"+1,35:!->alias\x007790\x002108\x00/var/qmail/alias\0-\0\n"
        b"+5,17:!joe\0->second\x001\x001\x00/dup\0\0\n"
        b"+0,1:->-\n"
        b"\n")


@pytest.fixture
def home(world_tmp):
    """A QMAILHOME with just users/."""
    (world_tmp / "users").mkdir()
    return world_tmp


def newu(home, assign):
    """Write users/assign and run the real qmail-newu; return the completed process."""
    (home / "users" / "assign").write_bytes(assign)
    return subprocess.run([program("qmail-newu")], env=qenv(home), capture_output=True)


def test_newu_layout_read_back_by_tinycdb(home):
    need("cdb")
    p = newu(home, ASSIGN)
    assert (p.returncode, p.stderr) == (0, b"")
    cdb = str(home / "users" / "cdb")
    assert subprocess.run(["cdb", "-d", cdb], capture_output=True, check=True).stdout == DUMP
    query = subprocess.run(["cdb", "-q", cdb, "!list-"], capture_output=True, check=True).stdout
    assert query == b"lists\x007\x008\x00/l\0-\0list-"
    wild = subprocess.run(["cdb", "-q", cdb, "!joe"], capture_output=True)  # exact keys end in NUL
    assert (wild.returncode, wild.stdout) == (100, b"")
    assert not (home / "users" / "cdb.tmp").exists()
    assert oct((home / "users" / "cdb").stat().st_mode & 0o777) == "0o644"


def test_lookup_semantics(home):
    assert users.lookup(str(home), b"joe") is None  # no users/cdb yet: qmail-lspawn asks qmail-getpw
    assert newu(home, ASSIGN).returncode == 0
    A = users.Assignment
    assert users.lookup(str(home), b"JOE") == A(b"joe", 1001, 100, b"/home/joe", b"", b"")  # first of duplicates
    assert users.lookup(str(home), b"joe-Foo") == A(b"joe", 1001, 100, b"/home/joe", b"-", b"Foo")
    assert users.lookup(str(home), b"mixed") == A(b"m", 5, 6, b"/m", b"", b"")
    assert users.lookup(str(home), b"list-x-y") == A(b"lists", 7, 8, b"/l", b"-", b"list-x-y")
    assert users.lookup(str(home), b"Nobody") == A(b"alias", 7790, 2108, b"/var/qmail/alias", b"-", b"Nobody")
    assert users.lookup(str(home), "joe") == users.lookup(str(home), b"joe")


def test_lookup_without_wildcards_misses(home):
    assert newu(home, b"=joe:joe:1:1:/h:::\n.\n").returncode == 0
    assert users.lookup(str(home), b"joe-x") is None
    assert users.lookup(str(home), b"joe") == users.Assignment(b"joe", 1, 1, b"/h", b"", b"")


def test_a_long_running_lookup_sees_qmail_newu_replace_users_cdb(home):
    """qmail-lspawn remembers answers; a new users/cdb (same size, other uid) must replace them at once."""
    assert newu(home, b"=joe:joe:1:1:/h:::\n.\n").returncode == 0
    assert users.lookup(str(home), b"joe") == users.Assignment(b"joe", 1, 1, b"/h", b"", b"")
    assert users.lookup(str(home), b"joe") == users.Assignment(b"joe", 1, 1, b"/h", b"", b"")  # remembered
    assert newu(home, b"=joe:joe:2:1:/h:::\n.\n").returncode == 0
    assert users.lookup(str(home), b"joe") == users.Assignment(b"joe", 2, 1, b"/h", b"", b"")
    (home / "users" / "cdb").unlink()
    assert users.lookup(str(home), b"joe") is None


def test_lookup_cdb_without_wildchars_record_is_an_error(home):
    import cdbx
    maker = cdbx.CDB.make(str(home / "users" / "cdb"))
    maker.add(b"!joe\0", b"joe\x001\x001\0/h\0\0")
    maker.commit().close()
    with pytest.raises(users.UsersCdbError) as e:
        users.lookup(str(home), b"joe")
    assert e.value.code == 117


@pytest.mark.parametrize("assign", [
    b"=joe:joe:1:1:/h::\n.\n",         # five colons after the key
    b"joejoe11h\n.\n",                 # no colon
    b":joe:1:1:/h:::\n.\n",             # empty key position
    b"=joe:joe:1:1:/h:::\n",           # no `.` line
    b"=joe:joe:1:1:/h:::\n.",           # fine: `.` without newline ends it (checked below)
    b"=jo\0e:joe:1:1:/h:::\n.\n",       # NUL
    b"=joe:joe:1:1:/h:::\n\n.\n",       # blank line
    b"",
])
def test_newu_bad_format_keeps_old_cdb(home, assign):
    assert newu(home, b"=old:old:1:1:/o:::\n.\n").returncode == 0
    before = (home / "users" / "cdb").read_bytes()
    p = newu(home, assign)
    if assign.endswith(b"\n."):
        assert p.returncode == 0
        return
    assert (p.returncode, p.stderr) == (111, b"qmail-newu: fatal: bad format in users/assign\n")
    assert (home / "users" / "cdb").read_bytes() == before


def test_newu_missing_assign_and_home(home, world_tmp):
    p = subprocess.run([program("qmail-newu")], env=qenv(home), capture_output=True)
    assert (p.returncode, p.stderr) == (111, b"qmail-newu: fatal: unable to open users/assign\n")
    p = subprocess.run([program("qmail-newu")], env=qenv(world_tmp / "absent"), capture_output=True)
    assert (p.returncode, p.stderr) == (111, b"qmail-newu: fatal: unable to chdir\n")


# --- property tests of the pure parser and the lookup ---------------------------------------------

field = st.binary(max_size=8).filter(lambda b: b":" not in b and b"\0" not in b and b"\n" not in b)
local = st.binary(min_size=1, max_size=8).filter(lambda b: b":" not in b and b"\0" not in b and b"\n" not in b)
entry = st.builds(users.Entry, st.booleans(), local, st.tuples(*[field] * 6))


def format_entry(entry):
    """Return the assign line (with newline) for an Entry."""
    return (b"+" if entry.wild else b"=") + entry.local + b":" + b":".join(entry.fields) + b":\n"


@given(st.lists(entry, max_size=8))
def test_assign_round_trip(entries):
    text = b"".join(format_entry(e) for e in entries) + b".\n"
    assert users.parse_assign(text) == entries


@given(st.binary(max_size=60))
def test_parser_accepts_or_rejects_cleanly(data):
    try:
        entries = users.parse_assign(data)
    except users.AssignError:
        return
    for e in entries:
        assert len(e.fields) == 6 and b"\0" not in e.local


def model_lookup(entries, local):
    """qmail-users(5) in words: exact beats wildcard, longer wildcard beats shorter, first wins."""
    low = local.lower()
    for e in entries:
        if not e.wild and e.local.lower() == low:
            return e.fields
    best = None
    for e in entries:
        if e.wild and low.startswith(e.local.lower()) and (best is None or len(e.local) > len(best.local)):
            best = e
    if best is None:
        return None
    return best.fields[:5] + (best.fields[5] + local[len(best.local):],)


lower_local = st.text("abc-.", min_size=0, max_size=4).map(str.encode)
numeric = st.integers(0, 99).map(lambda n: b"%d" % n)
model_entry = st.builds(users.Entry, st.booleans(), lower_local,
                        st.tuples(field, numeric, numeric, field, field, field))


@settings(max_examples=300)
@given(st.lists(model_entry, max_size=8), st.text("abcAB-.", max_size=6).map(str.encode))
def test_search_matches_the_documented_semantics(entries, local):
    entries = [e for e in entries if e.wild or e.local]  # `=` needs a non-empty key
    table = {}
    for key, value in users.cdb_records(entries):
        table.setdefault(key, value)  # a cdb returns the first record of a key
    found = users.search(table.get, local)
    expected = model_lookup(entries, local)
    if expected is None:
        assert found is None
    else:
        user, uid, gid, homedir, dash, ext = expected
        assert found == users.Assignment(user, int(uid), int(gid), homedir, dash, ext)


def test_uppercase_wildcard_last_char_is_kept_as_qmail_does(home):
    # qmail-newu records the wildcard's last character unlowercased; lspawn compares lowercase: no match
    assert newu(home, b"+ab-X:u:1:1:/h:-::\n.\n").returncode == 0
    assert users.lookup(str(home), b"ab-xy") is None
