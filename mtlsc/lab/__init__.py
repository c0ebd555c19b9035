"""The lab: a policy proven on a real nginx on loopback, standing on the compiler and the model.

`run` rewrites a policy for loopback (`rewrite`), mints a PKI shaped like it (`pki` on the
primitives of `certs`, or the user's own CAs: `userca`), compiles, starts nginx in a throwaway
prefix (`nginx`) with an echo backend (`echo`), an OCSP responder (`ocsp`) and a DNS server
(`dns`) where the policy needs them, runs tests.sh and the policy tests with a TLS client
(`client`), audits the headers the backend received (`audit`) and reports (`report`). The
commands: `mtlsc lab` (`command`), `mtlsc mint-cast` (`mintcast`), `mtlsc demo-pki` (`demo`).
"""
