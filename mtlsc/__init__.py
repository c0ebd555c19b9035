"""mtlsc: a policy-as-code compiler for mutual TLS on nginx.

The pipeline, one module per stage: parse -> lower -> load_pki -> checks -> emit.
`mtlsc.pipeline` chains them; `mtlsc.cli` is the command line.
"""

__version__ = "0.1.0"
