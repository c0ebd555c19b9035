"""Tools for reading a policy in review, standing on the compiler and the model (mtlsc.model).

`fmt` rewrites policies in the canonical layout, `explain` prints the access matrix (who reaches
which route), `diff` compares two versions of a policy: who gains or loses access (`diff_access`)
and what trust changes (`diff_trust`, and the server's own TLS: `diff_tls`).
"""
