"""mtlsc's model of what the emitted config does, and the rules the emitter and the model share.

`evaluate` answers, without nginx, what the compiled configuration does with one request and one
client (route, mode, CA binding, identity, headers); `locations` and `uri` are the location and
path rules both the emitter and the model build from, so the two cannot drift apart; `cast` names
the client certificates the test script and the lab need. `mtlsc test`, `explain`, `diff` and
tests.sh take their answers from here.
"""
