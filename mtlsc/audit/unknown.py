"""What the audit does not model, said where it is (MTLS501 notes): directives of modules mtlsc
does not know, access decisions made by code (`auth_request`, Lua, njs, perl), and templating
leftovers. The findings around them assume they change nothing; the note says so."""

from __future__ import annotations

import re

from mtlsc.audit.model import Config, span_of, span_word
from mtlsc.audit.report import finding
from mtlsc.diagnostics import Diagnostic
from mtlsc.nginx_conf import Directive

# Core, http and stream directives of stock nginx 1.22 that hand-written configs use, plus common
# third-party ones whose effect on access the audit need not model.
KNOWN = frozenset("""
absolute_redirect accept_mutex accept_mutex_delay access_log add_after_body add_before_body add_header add_trailer
addition_types aio aio_write alias allow ancient_browser ancient_browser_value auth_basic auth_basic_user_file
auth_request auth_request_set autoindex autoindex_exact_size autoindex_format autoindex_localtime break charset
charset_map charset_types chunked_transfer_encoding client_body_buffer_size client_body_in_file_only
client_body_in_single_buffer client_body_temp_path client_body_timeout client_header_buffer_size
client_header_timeout client_max_body_size connection_pool_size create_full_put_path daemon dav_access dav_methods
debug_connection debug_points default default_type deny directio directio_alignment disable_symlinks empty_gif
env error_log error_page etag events expires fastcgi_bind fastcgi_buffer_size fastcgi_buffering fastcgi_buffers
fastcgi_busy_buffers_size fastcgi_cache fastcgi_cache_bypass fastcgi_cache_key fastcgi_cache_lock
fastcgi_cache_methods fastcgi_cache_min_uses fastcgi_cache_path fastcgi_cache_use_stale fastcgi_cache_valid
fastcgi_connect_timeout fastcgi_hide_header fastcgi_ignore_client_abort fastcgi_ignore_headers fastcgi_index
fastcgi_intercept_errors fastcgi_keep_conn fastcgi_next_upstream fastcgi_param fastcgi_pass fastcgi_pass_header
fastcgi_pass_request_body fastcgi_pass_request_headers fastcgi_read_timeout fastcgi_request_buffering
fastcgi_send_timeout fastcgi_split_path_info fastcgi_temp_path geo geoip_city geoip_country grpc_buffer_size
grpc_connect_timeout grpc_hide_header grpc_pass grpc_read_timeout grpc_send_timeout grpc_set_header
grpc_ssl_certificate grpc_ssl_certificate_key grpc_ssl_trusted_certificate grpc_ssl_verify gunzip gzip
gzip_buffers gzip_comp_level gzip_disable gzip_http_version gzip_min_length gzip_proxied gzip_static gzip_types
gzip_vary hash hostnames http http2 http2_max_concurrent_streams http2_push http2_push_preload if if_modified_since
ignore_invalid_headers include index internal ip_hash keepalive keepalive_disable keepalive_requests
keepalive_time keepalive_timeout large_client_header_buffers least_conn limit_conn limit_conn_log_level
limit_conn_status limit_conn_zone limit_except limit_rate limit_rate_after limit_req limit_req_log_level
limit_req_status limit_req_zone lingering_close lingering_time lingering_timeout listen load_module location
log_format log_not_found log_subrequest map map_hash_bucket_size map_hash_max_size master_process max_ranges
merge_slashes mirror mirror_request_body msie_padding msie_refresh multi_accept open_file_cache
open_file_cache_errors open_file_cache_min_uses open_file_cache_valid open_log_file_cache output_buffers
pcre_jit pid port_in_redirect postpone_output proxy_bind proxy_buffer_size proxy_buffering proxy_buffers
proxy_busy_buffers_size proxy_cache proxy_cache_background_update proxy_cache_bypass proxy_cache_convert_head
proxy_cache_key proxy_cache_lock proxy_cache_lock_age proxy_cache_lock_timeout proxy_cache_methods
proxy_cache_min_uses proxy_cache_path proxy_cache_revalidate proxy_cache_use_stale proxy_cache_valid
proxy_connect_timeout proxy_cookie_domain proxy_cookie_flags proxy_cookie_path proxy_force_ranges
proxy_headers_hash_bucket_size proxy_headers_hash_max_size proxy_hide_header proxy_http_version
proxy_ignore_client_abort proxy_ignore_headers proxy_intercept_errors proxy_limit_rate proxy_max_temp_file_size
proxy_method proxy_next_upstream proxy_next_upstream_timeout proxy_next_upstream_tries proxy_no_cache proxy_pass
proxy_pass_header proxy_pass_request_body proxy_pass_request_headers proxy_read_timeout proxy_redirect
proxy_request_buffering proxy_send_lowat proxy_send_timeout proxy_set_body proxy_set_header
proxy_socket_keepalive proxy_ssl_certificate proxy_ssl_certificate_key proxy_ssl_ciphers proxy_ssl_name
proxy_ssl_protocols proxy_ssl_server_name proxy_ssl_session_reuse proxy_ssl_trusted_certificate proxy_ssl_verify
proxy_ssl_verify_depth proxy_store proxy_store_access proxy_temp_file_write_size proxy_temp_path
random_index real_ip_header real_ip_recursive recursive_error_pages referer_hash_bucket_size
referer_hash_max_size request_pool_size reset_timedout_connection resolver resolver_timeout return rewrite
rewrite_log root satisfy scgi_param scgi_pass secure_link secure_link_md5 secure_link_secret send_lowat
send_timeout sendfile sendfile_max_chunk server server_name server_name_in_redirect server_names_hash_bucket_size
server_names_hash_max_size server_tokens set set_real_ip_from slice split_clients ssi ssi_types ssl
ssl_buffer_size ssl_certificate ssl_certificate_key ssl_ciphers ssl_client_certificate ssl_conf_command ssl_crl
ssl_dhparam ssl_early_data ssl_ecdh_curve ssl_ocsp ssl_ocsp_cache ssl_ocsp_responder ssl_password_file
ssl_prefer_server_ciphers ssl_protocols ssl_reject_handshake ssl_session_cache ssl_session_ticket_key
ssl_session_tickets ssl_session_timeout ssl_stapling ssl_stapling_file ssl_stapling_responder ssl_stapling_verify
ssl_trusted_certificate ssl_verify_client ssl_verify_depth stream stub_status sub_filter sub_filter_last_modified
sub_filter_once sub_filter_types tcp_nodelay tcp_nopush thread_pool timer_resolution try_files types
types_hash_bucket_size types_hash_max_size underscores_in_headers upstream user userid userid_domain
userid_expires userid_name userid_path uwsgi_param uwsgi_pass uwsgi_read_timeout uwsgi_buffers
valid_referers variables_hash_bucket_size variables_hash_max_size worker_connections worker_cpu_affinity
worker_processes worker_rlimit_nofile worker_shutdown_timeout working_directory xml_entities zone
more_set_headers more_clear_headers js_import js_set js_path
""".split())
# Directives that decide access (or rewrite identity) in code the audit cannot read.
DECIDES = ("auth_request", "access_by_lua", "access_by_lua_block", "access_by_lua_file", "rewrite_by_lua",
           "rewrite_by_lua_block", "rewrite_by_lua_file", "js_content", "perl", "more_set_input_headers",
           "more_clear_input_headers", "satisfy")
_ENV_TEMPLATE = re.compile(r"\$\{[A-Z][A-Z0-9_]*\}|\{\{|\}\}|\{%|%\}|<%")
_CONTEXT_BLOCKS = ("http", "server", "location", "if", "limit_except", "upstream", "map", "geo", "split_clients",
                   "types", "events", "stream", "mail", "match")
KEYED_BLOCKS = ("map", "geo", "split_clients", "types", "upstream", "match")


def _walk(block, inside: str = ""):
    for d in block or ():
        if isinstance(d, Directive):
            yield d, inside
            if d.block is not None:
                yield from _walk(d.block, d.name)


def not_understood(config: Config) -> list[Diagnostic]:
    out = []
    for d, inside in _walk(config.loaded.tree):
        if inside in KEYED_BLOCKS:  # keys and values, not directives
            continue
        template = next((i for i, w in enumerate(d.words) if _ENV_TEMPLATE.search(w.raw)), None)
        if template is not None:
            out.append(finding(
                "MTLS501", span_word(d, template),
                f"`{d.words[template].raw}` looks like a templating leftover (envsubst, Helm, Jinja): the audit reads "
                "it as nginx would, literally", "audit the rendered configuration (`nginx -T | mtlsc audit -`)"))
            continue
        if d.name in DECIDES:
            out.append(finding(
                "MTLS501", span_of(d),
                f"`{d.name}` decides access (or changes request headers) in code the audit does not read: findings "
                "about this place assume it lets every request through unchanged",
                "check by hand what it does for a request without a certificate and one with forged identity headers",
                "cannot carry it over; it is left as a comment in the policy"))
        elif d.name not in KNOWN and not d.name.startswith(("ssl_", "proxy_", "fastcgi_", "uwsgi_", "scgi_", "grpc_",
                                                             "js_", "lua_", "more_", "brotli", "gzip_", "http2_",
                                                             "quic_", "http3_", "limit_", "auth_", "sub_filter",
                                                             "open_file", "client_", "log_", "memcached_",
                                                             "image_filter", "xslt_", "mp4", "flv", "hls",
                                                             "f4f", "dav_", "geoip", "upstream_")):
            out.append(finding(
                "MTLS501", span_of(d),
                f"unknown directive `{d.name}` (a module mtlsc does not know, or a typo nginx would refuse): the audit "
                "skips it", "if it is a module's, check by hand that it changes neither access nor request headers"))
    return out
