"""`nginx { ... }` in a server or route: the user's own directives (HSTS, timeouts, logging, body
size, rate limits), checked so that none can undo a gate.

Allowed are only the directives listed in ALLOWED: they act on responses, limits, timeouts, logs and
buffers, never on who is let in. Everything else is refused with MTLS037 and the reason: client
verification (`ssl_*`), the identity headers (`proxy_set_header`, `underscores_in_headers`, ...),
locations and other blocks, the rewrite module (`if`, `return`, `rewrite`, `set`), proxying
(`proxy_pass`, caches), code (`js_*`, `*_by_lua*`), and any directive mtlsc does not know: a module
it has never seen could do any of these. The text is read by nginx's own tokenizer rules
(`mtlsc.nginx_conf`), and emitted word for word, one directive per line, so nothing in it can close
the block or add a directive the checks did not see (MTLS038).
"""

from __future__ import annotations

import re

from mtlsc import ast, ir
from mtlsc.diagnostics import Related
from mtlsc.lower.common import Ctx, suggest
from mtlsc.nginx_conf import Comment, ConfError, Directive, parse
from mtlsc.source import Span

_B = ("server", "location")
_S = ("server",)

# name -> the blocks nginx accepts it in (of the two mtlsc writes). Timeouts, sizes, logs, limits
# and response headers: none decides whether a request reaches the backend or with which headers.
ALLOWED: dict[str, tuple[str, ...]] = {
    # response headers
    **dict.fromkeys(("add_header", "add_trailer", "expires", "etag", "server_tokens", "charset", "source_charset",
                     "override_charset", "charset_types", "more_set_headers", "more_clear_headers",
                     "proxy_hide_header", "proxy_pass_header", "proxy_ignore_headers", "proxy_redirect",
                     "proxy_cookie_domain", "proxy_cookie_path", "proxy_cookie_flags"), _B),
    # request body, timeouts, connections, buffers
    **dict.fromkeys(("client_max_body_size", "client_body_buffer_size", "client_body_timeout",
                     "client_body_in_single_buffer", "keepalive_timeout", "keepalive_requests", "keepalive_time",
                     "send_timeout", "lingering_close", "lingering_time", "lingering_timeout",
                     "reset_timedout_connection", "tcp_nodelay", "proxy_connect_timeout", "proxy_read_timeout",
                     "proxy_send_timeout", "proxy_buffering", "proxy_request_buffering", "proxy_buffer_size",
                     "proxy_buffers", "proxy_busy_buffers_size", "proxy_max_temp_file_size",
                     "proxy_temp_file_write_size", "proxy_http_version", "proxy_ignore_client_abort",
                     "proxy_next_upstream", "proxy_next_upstream_tries", "proxy_next_upstream_timeout",
                     "proxy_socket_keepalive", "proxy_limit_rate", "proxy_force_ranges"), _B),
    **dict.fromkeys(("client_header_timeout", "client_header_buffer_size", "large_client_header_buffers"), _S),
    # rate limits and further restrictions (with `satisfy` refused, they only ever add one)
    **dict.fromkeys(("limit_req", "limit_req_status", "limit_req_log_level", "limit_req_dry_run", "limit_conn",
                     "limit_conn_status", "limit_conn_log_level", "limit_conn_dry_run", "limit_rate",
                     "limit_rate_after", "allow", "deny", "auth_basic", "auth_basic_user_file"), _B),
    **dict.fromkeys(("set_real_ip_from", "real_ip_header", "real_ip_recursive"), _B),
    # logging
    **dict.fromkeys(("access_log", "error_log", "log_not_found", "log_subrequest", "open_log_file_cache"), _B),
    # compression and body filters
    **dict.fromkeys(("gzip", "gzip_types", "gzip_min_length", "gzip_comp_level", "gzip_proxied", "gzip_vary",
                     "gzip_disable", "gzip_http_version", "gzip_buffers", "gunzip", "chunked_transfer_encoding",
                     "sub_filter", "sub_filter_once", "sub_filter_types", "sub_filter_last_modified"), _B),
}

# Directives nginx lets appear several times in one block; any other one twice fails `nginx -t`.
REPEATABLE = frozenset(("add_header", "add_trailer", "more_set_headers", "more_clear_headers", "proxy_hide_header",
                        "proxy_pass_header", "proxy_redirect", "proxy_cookie_domain", "proxy_cookie_path",
                        "proxy_cookie_flags", "limit_req", "limit_conn", "allow", "deny", "access_log", "error_log",
                        "set_real_ip_from", "sub_filter"))

# Why a directive is refused, by name or name pattern, first match wins; then the fix.
_REFUSED: list[tuple[str, str, str]] = [
    (r"ssl_.*", "it changes TLS or client-certificate verification, which mtlsc writes from the policy's `ca`, "
                "`require`/`optional` and `handshake`", "state it in the policy; mtlsc has no way to let a directive weaken it"),
    (r"proxy_ssl_.*", "it changes how nginx checks the backend, which mtlsc writes from `backend_ca`, `backend_name` "
                      "and `backend_verify`", "use those statements"),
    (r"proxy_set_header|proxy_pass_request_headers|proxy_pass_request_body|proxy_set_body|proxy_method|"
     r"more_set_input_headers|more_clear_input_headers|underscores_in_headers|ignore_invalid_headers|"
     r"proxy_headers_hash_.*",
     "it changes the request headers the backend receives: mtlsc sets or clears every identity header in each "
     "location, and a directive here could forge or drop one (a location's own `proxy_set_header` lines "
     "replace all of mtlsc's)", "forward certificate fields with `forward`, clear more headers with `clear_headers`"),
    (r"proxy_pass|proxy_bind|proxy_store.*|mirror.*|fastcgi_.*|uwsgi_.*|scgi_.*|grpc_.*|memcached_.*|"
     r"proxy_cache.*|proxy_no_cache|proxy_temp_path",
     "it changes where requests go or what answers them (a cache answers one client with another's response)",
     "the backend is the route's `backend`; caching is not offered behind client certificates"),
    (r"if|return|rewrite|set|break|rewrite_log|uninitialized_variable_warn",
     "the rewrite module runs in the same phase as mtlsc's gates (`if (...) { return 403; }`): it can answer or "
     "redirect a request before or instead of them", "refusals are set with `reject REASON STATUS \"body\"`"),
    (r"location|limit_except|server|http|upstream|map|geo|split_clients|types|match",
     "it is a block: a `location` or `limit_except` inside a server or route would serve requests past mtlsc's gates",
     "routes are `route` statements; blocks that belong to the http context go in your nginx.conf"),
    (r"auth_request|auth_request_set|satisfy|auth_jwt.*|auth_delay",
     "mtlsc's key check of several CAs on one server is an `auth_request`: another one replaces it, and "
     "`satisfy any` lets any passing access check skip it", "access is decided by `require` and `allow`"),
    (r"error_page|proxy_intercept_errors|recursive_error_pages",
     "it can turn mtlsc's refusals (403, 495, 496) into another answer, and a location's own `error_page` "
     "replaces mtlsc's", "set the status and body of refusals with `reject REASON STATUS \"body\"`"),
    (r"internal|root|alias|try_files|index|autoindex.*|random_index|default_type|types_hash_.*|disable_symlinks|"
     r"open_file_cache.*|sendfile.*|aio.*|directio.*|output_buffers|read_ahead|stub_status|empty_gif|flv|mp4.*|"
     r"ssi.*|addition_.*|xslt_.*|image_filter.*|dav_.*|create_full_put_path|min_delete_depth|"
     r"gzip_static|gunzip_buffers|postpone_output|absolute_redirect|server_name_in_redirect|port_in_redirect|"
     r"msie_.*|server_name|listen|resolver|resolver_timeout|merge_slashes|subrequest_output_buffer_size",
     "it changes what serves a request, how its URI is read, or how the server is addressed, which mtlsc "
     "writes from the routes (or sets itself)", "routes and backends are stated in the policy"),
    (r"js_.*|perl.*|.*_by_lua.*|lua_.*|access_by_.*|content_by_.*|njs_.*|wasm_.*",
     "it runs code, which can change anything about a request", "put code in the backend"),
    (r"include", "it reads a file mtlsc cannot check", "write the directives in the `nginx { }` block"),
    (r"limit_req_zone|limit_conn_zone|log_format|proxy_cache_path|map_hash_.*|variables_hash_.*|"
     r"server_names_hash_.*|keyval_zone|keyval",
     "nginx allows it only in the http context, not in a server or location",
     "put it in the http block of your nginx.conf (mtlsc's files are included there) and refer to it here"),
]

_WORD_PROBLEM = re.compile(r"[\x00-\x1f\x7f]")


def lower_nginx_blocks(ctx: Ctx, body, where: str, context: str) -> tuple[ir.NginxDirective, ...]:
    """The checked directives of every `nginx { }` in a server's or route's body (`context`:
    "server" or "location"), in order."""
    out: list[ir.NginxDirective] = []
    seen: dict[str, ir.NginxDirective] = {}
    for block in (s for s in body if isinstance(s, ast.NginxBlock)):
        for d in _directives(ctx, block):
            lowered = _check(ctx, d, where, context)
            if lowered is None:
                continue
            if d.name in seen and d.name not in REPEATABLE:
                ctx.err("MTLS013", lowered.span, f"`{d.name}` is given twice in {where}",
                        "nginx takes it once per block (`nginx -t`: directive is duplicate); keep one",
                        related=[Related(seen[d.name].span, "first given here")])
                continue
            seen.setdefault(d.name, lowered)
            out.append(lowered)
    return tuple(out)


def _directives(ctx: Ctx, block: ast.NginxBlock) -> list[Directive]:
    """The directives of one block's text, or [] and MTLS038 when nginx would read it otherwise."""
    word, path = block.body, block.body.span.path
    inner = word.value[1:-1]
    try:
        items = parse(inner, path, word.span.line, word.span.col + 1)
    except ConfError as exc:
        ctx.err("MTLS038", Span(path, exc.line, exc.col, exc.line, exc.col + 1),
                f"this `nginx` block is not a list of nginx directives: {exc.message}",
                "write each directive as `name argument...;`; quote arguments with spaces, `;`, `{` or `}`",
                label="nginx would read this differently")
        return []
    found = []
    for item in items:
        if isinstance(item, Comment):
            continue
        if item.block is not None:
            ctx.err("MTLS037", _span(path, item), f"`{item.name} {{ ... }}` is a block: not allowed in an `nginx` block",
                    "a `location` or `if` inside a server or route would serve requests past mtlsc's gates; routes "
                    "are `route` statements, and http-level blocks go in your nginx.conf", label="refused")
            continue
        bad = next((w for w in item.words if _WORD_PROBLEM.search(w.raw)), None)
        if bad is not None:
            ctx.err("MTLS038", Span(path, bad.line, bad.col, bad.end_line, bad.end_col),
                    "a word of this directive holds a line break or another control character",
                    "keep each directive's words on one line, without tabs inside quotes; nginx's `\\n` escape is fine",
                    label="control character")
            continue
        brace = next((w for w in item.words if not w.quoted and re.search(r"[{}]", w.raw)), None)
        if brace is not None:
            ctx.err("MTLS038", Span(path, brace.line, brace.col, brace.end_line, brace.end_col),
                    "a `{` or `}` inside an unquoted word",
                    "nginx reads it as part of the word, but other tools (and people) read a block there: quote "
                    "the argument (`\"${var}x\"` works: quoted strings still hold variables)", label="quote this")
            continue
        found.append(item)
    return found


def _span(path: str, d: Directive) -> Span:
    return Span(path, d.line, d.col, d.end_line, d.end_col)


def _check(ctx: Ctx, d: Directive, where: str, context: str) -> ir.NginxDirective | None:
    name = d.words[0]
    span = Span(d.path, name.line, name.col, name.end_line, name.end_col)
    if name.quoted or name.raw != name.value:
        ctx.err("MTLS037", span, f"directive name {name.raw} is quoted or escaped",
                "write directive names bare, e.g. `add_header`", label="refused")
        return None
    contexts = ALLOWED.get(name.value)
    if contexts is None:
        reason, fix = _refusal(name.value)
        ctx.err("MTLS037", span, f"`{name.value}` is not allowed in an `nginx` block: {reason}", fix, label="refused")
        return None
    if context not in contexts:
        ctx.err("MTLS037", span, f"nginx allows `{name.value}` only in a server block, not in a route's location",
                f"move it to the `nginx {{ }}` block of the server that holds {where}", label="not in a route")
        return None
    if len(d.words) == 1:
        ctx.err("MTLS037", span, f"`{name.value}` has no arguments", f"give `{name.value}` its value, e.g. "
                f"`{name.value} ...;` as in nginx's documentation", label="no arguments")
        return None
    return ir.NginxDirective(tuple(w.raw for w in d.words), _span(d.path, d))


def _refusal(name: str) -> tuple[str, str]:
    for pattern, reason, fix in _REFUSED:
        if re.fullmatch(pattern, name):
            return reason, fix
    hint = suggest(name, ALLOWED)
    return ("mtlsc does not know it, and allows only directives it knows cannot change who gets in or with which "
            "identity headers (docs/language.md \"Your own nginx directives\")",
            (hint + " " if hint else "") + "If your nginx needs it, set it outside mtlsc's servers (your nginx.conf's "
            "http block), or ask for it to be added")
