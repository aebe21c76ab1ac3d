"""systemd units made by `qmail-setup --services=systemd` (qmail-setup(8)), checked by `systemd-analyze
verify` (systemd cannot run as init here): qmail-send, each server as a qmail-tcpserver service and as an
Accept=yes socket with its template service."""

import os
import pwd
import shutil
import subprocess

import pytest

from servicetree import SERVERS, root_tree, setup_services


@pytest.mark.parametrize("accounts", ["single-user", "qmail"])
def test_units_pass_systemd_analyze_verify(tree, world_tmp, accounts):
    if not shutil.which("systemd-analyze"):
        pytest.skip("not installed: systemd-analyze (Debian's systemd package)")
    if accounts == "qmail":
        if os.geteuid() != 0:
            pytest.skip("needs root: a tree with qmail's accounts")
        tree = root_tree(world_tmp / "system")
        user = "\nUser=qmaild\nGroup=nofiles\n"
    else:
        user = "\nUser=%s\n" % pwd.getpwuid(os.geteuid()).pw_name
    prefix = world_tmp / "root"
    r = setup_services(tree, "systemd", prefix)
    assert r.returncode == 0, r.stderr
    units = prefix / "etc" / "systemd" / "system"
    names = sorted(p.name for p in units.iterdir())
    expected = ["qmail-send.service"]
    for server in SERVERS:
        expected += [server + ".service", server + ".socket", server + "@.service"]
    assert names == sorted(expected)
    for server in SERVERS:
        socket = (units / (server + ".socket")).read_text()
        assert "\nAccept=yes\n" in socket and "\nConflicts=%s.service\n" % server in socket
        assert "\nStandardInput=socket\n" in (units / (server + "@.service")).read_text()
        if server != "qmail-pop3d":  # POP3 starts as root: qmail-checkpassword switches to the user
            assert user in (units / (server + "@.service")).read_text()
        assert "qmail-tcpserver " in (units / (server + ".service")).read_text()
    assert "\nKillMode=mixed\n" in (units / "qmail-send.service").read_text()
    assert str(tree) + "/bin/qmail-start" in (units / "qmail-send.service").read_text()
    # every unit at once: unknown settings, bad values and missing programs are reported on fd 2
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + [str(units / n) for n in names],
                       capture_output=True, text=True, cwd=str(units))
    ours = [line for line in r.stderr.splitlines() if "qmail" in line]
    assert r.returncode == 0 and ours == [], r.stderr


def test_verify_catches_a_broken_unit(tree, world_tmp):
    """The check above can fail: a bad setting and a missing program are reported."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("not installed: systemd-analyze (Debian's systemd package)")
    r = setup_services(tree, "systemd", world_tmp / "root")
    assert r.returncode == 0, r.stderr
    unit = world_tmp / "root" / "etc" / "systemd" / "system" / "qmail-smtpd@.service"
    unit.write_text(unit.read_text().replace("StandardInput=socket", "StandardInput=sockets")
                    .replace(str(tree) + "/bin/tcp-env", str(tree) + "/bin/no-such-program"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert "sockets" in r.stderr and "no-such-program" in r.stderr
