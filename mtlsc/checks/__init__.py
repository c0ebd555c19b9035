"""The analysis pass: every check, registered in one list.

A check is a pure function `(ctx) -> Iterable[Finding]`. Its code and severity live here, in
CHECKS, and nowhere else; its docstring (What / Why / Example / Fix) is its documentation and
matches its entry in docs/checks.md. Codes: 1xx lockout, 2xx over-trust, 3xx trust and certificate files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable

from mtlsc import ir
from mtlsc.diagnostics import Diagnostic, Finding, Severity
from mtlsc.checks import chains, leaves, lockout, ocsp, overtrust, passthrough, san, server_cert, server_tls, trust_files
from mtlsc.pki import Pki

ERROR, WARNING, NOTE = Severity.ERROR, Severity.WARNING, Severity.NOTE


@dataclass(frozen=True, slots=True)
class CheckContext:
    policy: ir.Policy
    pki: Pki
    now: datetime
    # Certificates and CRLs that expire within this window are reported before they lock anyone out.
    expiry_window: timedelta = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class Check:
    code: str
    severity: Severity
    find: Callable[[CheckContext], Iterable[Finding]]


UNUSED_WAIVER = "MTLS149"


def unused_waiver(ctx):
    """What it catches: a `waive` that silences nothing: no finding of its code inside its block,
    a code that no check reports, or an error (errors cannot be waived).

    Why: a stale waiver would silently hide the next, possibly different, problem of that code
    in its block; a waiver that cannot apply misleads readers into thinking a finding is
    acknowledged. (Not about nginx: about keeping acknowledgements honest.)

    Example: `waive MTLS207 "CA is dedicated"` in a route that has an `allow` list.

    Fix: remove the waiver, or move it into the block whose finding it acknowledges.
    """
    if not ctx.policy.waivers:
        return  # nothing to judge: running every check again would double the cost of `check`
    severity = {c.code: c.severity for c in CHECKS}
    fired = [(c.code, f.span) for c in CHECKS if c.find is not unused_waiver for f in c.find(ctx)]
    mine = []  # this check's own findings, for waivers of MTLS149 itself
    waivers = sorted(ctx.policy.waivers, key=lambda w: w.code == UNUSED_WAIVER)
    for w in waivers:
        found = fired if w.code != UNUSED_WAIVER else mine
        if w.code not in severity:
            message = f"no check reports `{w.code}`: a waiver cannot silence it"
        elif severity[w.code] >= Severity.ERROR:
            message = f"`{w.code}` is an error: a waiver cannot silence it"
        elif not any(code == w.code and _within(span, w.scope) for code, span in found):
            message = f"nothing in this block reports `{w.code}`: the waiver is unused"
        else:
            continue
        mine.append((UNUSED_WAIVER, w.span))
        yield Finding(w.span, message, "remove the waiver", label="silences nothing")


CHECKS: tuple[Check, ...] = (
    Check("MTLS101", ERROR, lockout.public_route_behind_required_listener),
    Check("MTLS102", ERROR, chains.crl_missing_for_some_ca),
    Check("MTLS103", WARNING, lockout.probe_route_requires_certificate),
    Check("MTLS104", WARNING, lockout.no_public_health_route),
    Check("MTLS105", NOTE, lockout.bad_certificate_refused_on_public_routes),
    Check("MTLS106", WARNING, lockout.issuer_not_in_ca),
    Check("MTLS107", WARNING, lockout.route_never_reached),
    Check("MTLS108", WARNING, lockout.dn_written_root_first),
    Check("MTLS109", WARNING, lockout.target_predates_421),
    Check("MTLS110", ERROR, chains.verify_depth_too_small),
    Check("MTLS111", ERROR, chains.chain_without_root),
    Check("MTLS112", ERROR, chains.path_length_exceeded),
    Check("MTLS113", WARNING, ocsp.ocsp_without_responder_url),
    Check("MTLS114", ERROR, ocsp.ocsp_intermediate_without_url),
    Check("MTLS115", WARNING, ocsp.ocsp_responder_host_name),
    Check("MTLS116", NOTE, ocsp.ocsp_checks_intermediates),
    Check("MTLS117", ERROR, ocsp.ocsp_settings_differ_within_server),
    Check("MTLS118", ERROR, lockout.routes_differ_only_in_case),
    Check("MTLS119", ERROR, ocsp.ocsp_host_name_without_resolver),
    Check("MTLS120", ERROR, leaves.leaf_without_client_auth),
    Check("MTLS121", ERROR, leaves.leaf_ca_beside_crl),
    Check("MTLS149", WARNING, unused_waiver),
    Check("MTLS201", ERROR, chains.issuer_dn_shared_between_cas),
    Check("MTLS202", WARNING, overtrust.over_broad_identity_pattern),
    Check("MTLS203", WARNING, overtrust.cn_only_identity),
    Check("MTLS204", WARNING, overtrust.optional_forward_without_verify),
    Check("MTLS205", ERROR, overtrust.identity_header_not_set_or_cleared),
    Check("MTLS206", ERROR, overtrust.route_accepts_another_ca),
    Check("MTLS207", WARNING, overtrust.require_without_allow),
    Check("MTLS230", ERROR, chains.public_ca_in_bundle),
    Check("MTLS231", ERROR, chains.bundle_in_system_trust_store),
    Check("MTLS232", NOTE, chains.ca_can_mint_lookalike_issuer),
    Check("MTLS233", WARNING, chains.verify_depth_larger_than_needed),
    Check("MTLS234", WARNING, chains.several_roots_in_one_ca),
    Check("MTLS235", ERROR, overtrust.segment_route_overlaps_prefix),
    Check("MTLS236", ERROR, overtrust.slash_twins_with_different_gates),
    Check("MTLS237", WARNING, overtrust.unverified_https_backend),
    Check("MTLS238", NOTE, overtrust.session_tickets_off_for_cve),
    Check("MTLS239", ERROR, chains.ca_key_not_bindable),
    Check("MTLS240", WARNING, server_tls.old_tls_profile),
    Check("MTLS241", ERROR, server_tls.tls_profiles_differ_on_address),
    Check("MTLS242", NOTE, server_tls.default_server_decides_tls),
    Check("MTLS243", WARNING, san.spiffe_trust_domain_in_several_cas),
    Check("MTLS244", WARNING, passthrough.passthrough_route_unverified),
    Check("MTLS306", ERROR, trust_files.crl_expired),
    Check("MTLS307", ERROR, trust_files.crl_not_yet_valid),
    Check("MTLS308", WARNING, trust_files.crl_expiring_soon),
    Check("MTLS309", ERROR, trust_files.crl_not_signed_by_bundle),
    Check("MTLS310", ERROR, trust_files.ca_certificate_expired),
    Check("MTLS311", ERROR, trust_files.ca_certificate_not_yet_valid),
    Check("MTLS312", WARNING, trust_files.ca_certificate_expiring_soon),
    Check("MTLS313", ERROR, trust_files.not_a_ca_certificate),
    Check("MTLS314", ERROR, trust_files.ca_without_key_cert_sign),
    Check("MTLS315", ERROR, trust_files.leaf_certificate_in_bundle),
    Check("MTLS316", ERROR, leaves.leaf_not_self_signed),
    Check("MTLS317", ERROR, leaves.leaf_is_a_ca),
    Check("MTLS318", ERROR, leaves.leaf_not_valid_now),
    Check("MTLS319", WARNING, leaves.leaf_expiring_soon),
    Check("MTLS320", NOTE, server_cert.server_files_not_checked),
    Check("MTLS321", ERROR, server_cert.server_certificate_unusable),
    Check("MTLS322", ERROR, server_cert.server_key_mismatch),
    Check("MTLS323", ERROR, server_cert.server_certificate_expired),
    Check("MTLS324", WARNING, server_cert.server_certificate_expiring_soon),
    Check("MTLS325", WARNING, server_cert.server_chain_incomplete),
    Check("MTLS326", WARNING, server_cert.server_certificate_outside_profile),
    Check("MTLS327", ERROR, server_cert.server_name_not_covered),
    Check("MTLS328", WARNING, server_cert.stapling_not_possible),
    Check("MTLS329", WARNING, leaves.leaves_share_a_name),
)


def run_checks(ctx: CheckContext, checks: tuple[Check, ...] = CHECKS) -> list[Diagnostic]:
    """Run every check; apply `waive` statements (the finding stays visible, marked waived)."""
    out = []
    for check in checks:
        for f in _summarised(list(check.find(ctx))):
            d = Diagnostic(check.code, check.severity, f.span, f.message, f.help, f.label, f.related)
            out.append(_apply_waivers(d, ctx.policy.waivers))
    return out


SUMMARY_AFTER = 3  # findings of one check at one place (a bundle string) listed before they are summed up


def _summarised(findings: list[Finding]) -> list[Finding]:
    """One check's findings, with more than SUMMARY_AFTER at one place (a system trust store named
    as a bundle: 144 public roots) summed up in one finding that counts the rest."""
    by_place: dict = {}
    for f in findings:
        by_place.setdefault(f.span, []).append(f)
    out = []
    for f in findings:
        group = by_place[f.span]
        if len(group) <= SUMMARY_AFTER:
            out.append(f)
        elif f is group[0]:
            out.append(replace(f, message=f"{f.message} (and {len(group) - 1} more certificates of this file alike)"))
    return out


def _within(span, scope) -> bool:
    return span.path == scope.path and (scope.line, scope.col) <= (span.line, span.col) <= (scope.end_line, scope.end_col)


def _apply_waivers(d: Diagnostic, waivers) -> Diagnostic:
    if d.severity is Severity.ERROR:
        return d  # a waiver acknowledges a warning; an error is a broken config (MTLS149 says so)
    for w in waivers:
        if w.code == d.code and _within(d.span, w.scope):
            return replace(d, waived=w.reason)
    return d
