"""Repeated attributes on real nginx (issue #10 part 5): the compiled gate refuses a subject that
holds a named attribute twice, and mtlsc's model says the same.

One lab (`running_lab`): a policy with attribute identities (a pattern and an exact value, two
constraints on one attribute through an alias, a value with `,` `+` `"` `\\`), a route per
identity, and an optional route forwarding the subject so we see what nginx printed. Each subject
below is minted by the lab's CA and sent to every route; nginx's status must be the table's and
`mtlsc.model.evaluate`'s. The lab's own tests.sh then runs the cast's repeated-attribute near misses.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mtlsc import dn
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.lab.client import request
from mtlsc.lab.pki import issue_client, write_pem
from mtlsc.lab.run import running_lab, test_lab

pytestmark = pytest.mark.nginx

POLICY = r"""
ca partners { bundle "ca/partners.pem" }
identity globex { cn ~ "^globex-[a-z0-9-]+$"  o "Globex Inc" }
identity twice { cn "svc"  ou ~ "^eng-[a-z]+$"  organizationalUnitName ~ "^[a-z]+-[a-z]+$" }
identity odd { commonName "a,b+c\"d\\e"  o "Acme" }
server api.example.com {
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /globex/ { require partners  allow globex }
  route /twice/ { require partners  allow twice }
  route /odd/ { require partners  allow odd }
  route / { optional partners  forward subject }
}
"""
ODD_CN = r"CN=a\,b\+c\"d\\e"
# (subject exactly as nginx prints it, the identities it satisfies)
SUBJECTS = [
    ("CN=globex-a,O=Globex Inc", {"globex"}),
    ("CN=mallory,CN=globex-a,O=Globex Inc", set()),  # the issue's reproductions
    ("CN=globex-a,O=Globex Inc,O=Evil Org", set()),
    ("CN=globex-a,CN=globex-b,O=Globex Inc", set()),  # both CNs match the pattern: still two
    ("CN=mallory-x+CN=globex-a,O=Globex Inc", set()),  # multi-valued RDN, intruder printed first
    ("CN=globex-a+CN=ZZ,O=Globex Inc", set()),  # ... and printed last
    ("CN=globex-a,O=Globex Inc+O=Evil Org", set()),
    ("CN=globex-a+OU=ops,O=Globex Inc", {"globex"}),  # a multi-valued RDN is fine
    ("CN=globex-a,OU=x,OU=z+OU=y,O=Globex Inc", {"globex"}),  # unnamed attributes may repeat
    (r"OU=x\,CN=evil,CN=globex-a,O=Globex Inc", {"globex"}),  # `\,CN=` is inside OU's value
    (r"CN=mallory\,CN=globex-a,O=Globex Inc", set()),  # one CN, and it is `mallory,CN=globex-a`
    (r"CN=globex-a,OU=a\\,O=Evil,O=Globex Inc", set()),  # `\\` ends OU's value: a real second O
    ("CN=svc,OU=eng-core", {"twice"}),
    ("CN=svc,OU=eng-x,OU=ab-core", set()),  # each OU satisfies one constraint; neither is the one
    ("CN=svc,OU=eng-x+OU=ab-cd", set()),
    (f"{ODD_CN},O=Acme", {"odd"}),
    (f"{ODD_CN},{ODD_CN},O=Acme", set()),
    (f"{ODD_CN}+CN=z,O=Acme", set()),
]
ROUTES = {"globex": "/globex/x", "twice": "/twice/x", "odd": "/odd/x"}
HOST = "api.example.com"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, nginx_bin, now):
    tmp = tmp_path_factory.mktemp("dn-repeated")
    policy = tmp / "policy" / "p.mtls"
    policy.parent.mkdir()
    policy.write_text(POLICY, encoding="utf-8")
    with running_lab([str(policy)], tmp / "lab", nginx_bin=nginx_bin, now=now) as running:
        yield running, tmp


def _mint(running, tmp: Path, n: int, subject: str, now) -> tuple[Path, Path]:
    issued = issue_client(running.pki.chains["partners"].issuing, dn.x509_name(dn.parse_dn(subject)), now=now)
    base = tmp / "repeated" / f"s{n}"
    return write_pem(f"{base}.crt", issued.cert), write_pem(f"{base}.key", issued.key)


def test_gate_refuses_repeated_named_attributes(lab, now):
    running, tmp = lab
    server = running.policy.servers[0]
    port, = running.ports
    seen = {}
    for n, (subject, allowed) in enumerate(SUBJECTS):
        cert, key = _mint(running, tmp, n, subject, now)
        # What nginx printed: the optional route forwards $ssl_client_s_dn to the echo backend.
        probe = f"/probe-{n}"
        assert request("127.0.0.1", port, probe, server_name=HOST, cert=cert, key=key).status == 200
        got = [r for r in running.echo.snapshot() if r.path == probe]
        assert [r.header_values("X-Client-Subject") for r in got] == [[subject]], subject
        for name, path in ROUTES.items():
            real = request("127.0.0.1", port, path, server_name=HOST, cert=cert, key=key).status
            model = evaluate(server, path, Client(subject, "", verified_by="partners"))
            expected = 200 if name in allowed else 403
            seen[(subject, name)] = real
            assert (real, model.status) == (expected, expected), (subject, path, model.reason)
            if expected == 403:
                assert model.reason == "forbidden"
    assert list(seen.values()).count(200) == sum(len(a) for _, a in SUBJECTS)


def test_lab_cast_near_misses_are_refused(lab):
    running, tmp = lab
    run = test_lab(running, tmp / "lab")
    assert run.ok, run.output
    repeated = [line for line in run.output.splitlines() if "near miss of identity" in line
                and any(f"{a}=" in line for a in ("CN", "O", "OU"))]
    for fragment in ("(CN=mtlsc-near,CN=globex-a,O=Globex Inc)", "(CN=globex-a,O=Globex Inc,O=mtlsc-near)",
                     "(CN=mtlsc-near+CN=globex-a,O=Globex Inc)", "(CN=globex-a+CN=ZZ,O=Globex Inc)"):
        line = next((x for x in repeated if fragment in x), None)
        assert line is not None and line.strip().startswith("PASS") and line.endswith("-> 403 forbidden"), fragment
    assert not any(itertools.filterfalse(lambda x: x.strip().startswith("PASS"), repeated))
