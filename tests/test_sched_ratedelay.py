"""control/qmgrratedelay under control/scheduler qmgr (issue 19; Postfix's default_destination_rate_delay): after
each delivery to a destination, the next one to it waits the delay; another destination is not held up."""

from test_qctl_live import Live, qput, wait_for


def attempt_times(live):
    """Return (recipient, time) of each attempt the remote stand-in recorded, in order."""
    pairs = [line.split() for line in live.record.read_text().splitlines() if line]
    return [(r, float(t)) for r, t in pairs]


def test_rate_delay_spaces_deliveries_to_one_destination(world_tmp, procs):
    live = Live(world_tmp, procs, {"scheduler": "qmgr\n", "qmgrratedelay": "3\n"})
    live.fake.write_text("#!/bin/sh\ncat >/dev/null\necho \"$3 $(date +%%s.%%N)\" >>%s\n"
                         "printf 'rok\\n\\0Kaccepted.\\n\\0'\n" % live.record)
    tree = live.tree
    assert live.system.stop() == 0  # queued together: without the delay all three would go at once
    ns = [qput(tree, b"Subject: slow %d\n\nx\n" % i, rcpts=(b"s%d@slow.example" % i,)) for i in range(3)]
    other = qput(tree, b"Subject: other\n\nx\n", rcpts=(b"o@other.example",))
    live.start()
    for n in ns + [other]:
        live.system.wait_log(b"end msg %d\n" % n, timeout=30)
    wait_for(lambda: len(attempt_times(live)) == 4, "four attempts recorded")
    times = attempt_times(live)
    slow = [t for r, t in times if r.endswith("@slow.example")]
    assert len(slow) == 3
    gaps = [b - a for a, b in zip(slow, slow[1:])]
    assert all(gap >= 1.9 for gap in gaps), gaps  # qmail-send counts whole seconds: at least delay - 1
    [(_, t_other)] = [(r, t) for r, t in times if r.endswith("@other.example")]
    assert t_other - slow[0] < 1.5  # the other destination did not wait for slow.example's pauses
    assert live.log().count(b": success:") == 4
    assert live.system.stop() == 0
