"""qmail-send's recipient rewriting: envnoathost, percenthack, locals, virtualdomains (qmail-send(8), controls)."""

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.send.rewrite import Rewriter

VDOMS = b"""# comment
virt.example:vprep
joe@virt.example:joeprep
.wild.example:wprep
except.wild.example:
sub.except.wild.example:subprep
nocolon.example
"""


def rw(locals_data=b"test.example\nlocalhost\n", vdoms=VDOMS, percenthack=b"", env=b"test.example"):
    """A Rewriter from control bytes."""
    return Rewriter.from_controls(env, locals_data, b"me.example", percenthack, vdoms)


@pytest.mark.parametrize("recip, expected", [
    (b"a@test.example", ("local", b"a@test.example")),
    (b"a@TEST.Example", ("local", b"a@TEST.Example")),            # constmap folds ASCII case
    (b"a", ("local", b"a@test.example")),                          # no @: envnoathost
    (b"", ("local", b"@test.example")),
    (b"a@other.example", ("remote", b"a@other.example")),
    (b"x@virt.example", ("local", b"vprep-x@virt.example")),
    (b"x@VIRT.example", ("local", b"vprep-x@VIRT.example")),
    (b"joe@virt.example", ("local", b"joeprep-joe@virt.example")),  # user@domain before domain
    (b"x@a.wild.example", ("local", b"wprep-x@a.wild.example")),
    (b"x@a.b.wild.example", ("local", b"wprep-x@a.b.wild.example")),
    (b"x@wild.example", ("remote", b"x@wild.example")),            # .domain does not match domain itself
    (b"x@except.wild.example", ("remote", b"x@except.wild.example")),  # empty prepend = exception
    (b"x@a.except.wild.example", ("local", b"wprep-x@a.except.wild.example")),  # `except…` is no `.except…`
    (b"x@sub.except.wild.example", ("local", b"subprep-x@sub.except.wild.example")),
    (b"x@a.sub.except.wild.example", ("local", b"wprep-x@a.sub.except.wild.example")),
    (b"x@nocolon.example", ("remote", b"x@nocolon.example")),      # a line without `:` is ignored
    (b"a@b@virt.example", ("local", b"vprep-a@b@virt.example")),   # the last @ splits
])
def test_rewrite_examples(recip, expected):
    assert rw().rewrite(recip) == expected


def test_locals_win_over_virtualdomains():
    r = rw(locals_data=b"virt.example\n")
    assert r.rewrite(b"x@virt.example") == ("local", b"x@virt.example")


def test_catch_all_and_its_exception():
    r = rw(vdoms=b":alias-catchall\nremote.example:\n")
    assert r.rewrite(b"x@anything.example") == ("local", b"alias-catchall-x@anything.example")
    assert r.rewrite(b"x@remote.example") == ("remote", b"x@remote.example")
    assert r.rewrite(b"x@test.example") == ("local", b"x@test.example")


def test_duplicate_virtualdomain_last_line_wins():
    # constmap chains later entries in front: qmail finds the last one
    assert rw(vdoms=b"d.example:one\nD.example:two\n").rewrite(b"x@d.example") == ("local", b"two-x@d.example")


def test_prepend_may_contain_colons():
    assert rw(vdoms=b"d.example:a:b\n").rewrite(b"x@d.example") == ("local", b"a:b-x@d.example")


def test_trailing_blanks_and_comments_in_controls():
    r = rw(locals_data=b"# mine\nl.example \t\n\n", vdoms=b"v.example:p  \n")
    assert r.rewrite(b"x@l.example") == ("local", b"x@l.example")
    assert r.rewrite(b"x@v.example") == ("local", b"p-x@v.example")


@pytest.mark.parametrize("recip, expected", [
    (b"u%dest.example@relay.example", ("remote", b"u@dest.example")),
    (b"u%test.example@relay.example", ("local", b"u@test.example")),
    (b"u%a.example%relay.example@relay.example", ("remote", b"u@a.example")),  # relay again: again
    (b"u%x%relay.example@RELAY.example", ("remote", b"u@x")),       # repeated while the domain matches
    (b"u@relay.example", ("remote", b"u@relay.example")),            # no % : left alone
    (b"u%dest.example@other.example", ("remote", b"u%dest.example@other.example")),
    (b"u%relay.example", ("local", b"u%relay.example@test.example")),  # envnoathost is not percenthack
    (b"u%b%c@relay.example", ("remote", b"u%b@c")),
])
def test_percenthack(recip, expected):
    r = rw(percenthack=b"relay.example\n")
    assert r.rewrite(recip) == expected


def test_percenthack_with_envnoathost_in_it():
    r = rw(locals_data=b"l.example\n", percenthack=b"test.example\n")
    assert r.rewrite(b"u%l.example") == ("local", b"u@l.example")


def test_locals_default_to_me():
    r = Rewriter.from_controls(b"e.example", None, b"me.example")
    assert r.rewrite(b"x@me.example") == ("local", b"x@me.example")
    assert r.rewrite(b"x@e.example") == ("remote", b"x@e.example")
    with pytest.raises(ValueError):
        Rewriter.from_controls(b"e.example", None, None)


def test_empty_locals_file_does_not_fall_back_to_me():
    r = Rewriter.from_controls(b"e.example", b"", b"me.example")
    assert r.rewrite(b"x@me.example") == ("remote", b"x@me.example")


def test_hup_reload_keeps_envnoathost_and_percenthack():
    old = rw(percenthack=b"relay.example\n")
    new = old.reloaded(b"new.example\n", b"v2.example:p2\n")
    assert new.rewrite(b"x") == ("remote", b"x@test.example")
    assert new.rewrite(b"x@new.example") == ("local", b"x@new.example")
    assert new.rewrite(b"x@virt.example") == ("remote", b"x@virt.example")
    assert new.rewrite(b"x@v2.example") == ("local", b"p2-x@v2.example")
    assert new.rewrite(b"u%new.example@relay.example") == ("local", b"u@new.example")
    assert old.rewrite(b"x@virt.example") == ("local", b"vprep-x@virt.example")


@pytest.mark.parametrize("recip, expected", [
    (b"vprep-x@virt.example", b"x@virt.example"),
    (b"vprep-x@Virt.Example", b"x@Virt.Example"),
    (b"VPREP-x@virt.example", b"VPREP-x@virt.example"),      # prepend compared case-sensitively
    (b"vprepx@virt.example", b"vprepx@virt.example"),
    (b"wprep-x@a.wild.example", b"x@a.wild.example"),
    (b"joeprep-joe@virt.example", b"joeprep-joe@virt.example"),  # user@domain keys are not consulted
    (b"subprep-x@sub.except.wild.example", b"x@sub.except.wild.example"),
    (b"x@except.wild.example", b"x@except.wild.example"),
    (b"x@other.example", b"x@other.example"),
    (b"no-at-sign", b"no-at-sign"),
])
def test_strip_vdom_prepend(recip, expected):
    assert rw().strip_vdom_prepend(recip) == expected


LABEL = st.text(alphabet="abcXYZ019-", min_size=1, max_size=6).map(str.encode)
DOMAIN = st.lists(LABEL, min_size=1, max_size=3).map(b".".join)
BOX = st.binary(max_size=12).filter(lambda b: b"@" not in b and b"%" not in b)


@given(BOX, DOMAIN, st.lists(DOMAIN, max_size=3), st.lists(st.tuples(DOMAIN, LABEL), max_size=3))
def test_rewrite_properties(box, domain, locals_list, vdoms):
    r = Rewriter(b"env.example", locals_list, (), [d + b":" + p for d, p in vdoms])
    channel, addr = r.rewrite(box + b"@" + domain)
    folded = {d.lower() for d in locals_list}
    prepends = {d.lower(): p for d, p in vdoms}
    if domain.lower() in folded:
        assert (channel, addr) == ("local", box + b"@" + domain)
    elif domain.lower() in prepends:
        assert (channel, addr) == ("local", prepends[domain.lower()] + b"-" + box + b"@" + domain)
        assert r.strip_vdom_prepend(addr) == box + b"@" + domain
    else:
        assert (channel, addr) == ("remote", box + b"@" + domain)


@given(st.binary(max_size=30))
def test_rewrite_always_yields_an_address_with_at(recip):
    channel, addr = rw(percenthack=b"relay.example\n").rewrite(recip)
    assert channel in ("local", "remote")
    assert b"@" in addr
    if b"@" not in recip:
        assert addr.endswith(b"@test.example") or channel == "local"


def test_longest_suffix_first_and_dots_in_the_local_part_ignored():
    r = rw(vdoms=b".example:short\n.b.example:long\n.b@c.example:bad\n")
    assert r.rewrite(b"x@a.b.example") == ("local", b"long-x@a.b.example")
    assert r.rewrite(b"x@a.c.example") == ("local", b"short-x@a.c.example")
    assert r.rewrite(b"a.b@c.example") == ("local", b"short-a.b@c.example")
