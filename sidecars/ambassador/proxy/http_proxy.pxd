# Declarations for the compiled build of http_proxy.py (Cython "pure Python mode"): its classes
# become extension types with typed attributes, so the request path reads and writes C struct fields
# instead of instance dicts. Keep in step with the attributes each __init__ sets (a unit test checks);
# `public` keeps every attribute readable and writable from Python (tests, access log, stats). Methods
# the module calls on itself are `cpdef` on `final` classes and its helper functions `cdef`: direct C
# calls (keywords matched at build time); the event loop's and llhttp's callbacks stay plain methods
# (they are looked up by name).

cimport cython

@cython.final
cdef class HttpProxy:
    cdef public object config, cluster, stats, access_log, loop, pool, tls, ids, clients
    cdef public bint draining
    cdef public double clock
    cdef public Py_ssize_t max_header_bytes, max_retry_body
    cdef public bytes id_header
    cdef public object req_special
    cdef public int forwarded_mode
    cdef public bint hash_host
    cdef public object hash_header, host_line
    cdef public dict req_plain
    cdef public bint retry_connect
    cdef public object retry_on
    cdef public frozenset retry_methods
    cdef public double connect_timeout, per_try, overall
    cdef public dict endpoint_host_lines
    cdef public object deadlines
    cdef public object _deadline_timer

    cpdef watch(self, double when, Exchange ex)


@cython.final
cdef class ClientConnection:
    cdef public HttpProxy p
    cdef public object transport, parser, queue
    cdef public Exchange cur
    cdef public bytes url
    cdef public list hparts, special
    cdef public bint in_head
    cdef public Py_ssize_t head_bytes, head_pending, quiet
    cdef public double head_started, last_active
    cdef public int paused
    cdef public bint write_paused, closed, eof
    cdef public int error_status
    cdef public str failure
    cdef public object fatal
    cdef public UpstreamConnection tunnel
    cdef public object tunnel_buffer
    cdef public bytes peer
    cdef public object host

    cpdef _refuse(self, int status, str reason)
    cpdef pause(self, int bit)
    cpdef resume(self, int bit)
    cpdef bad_request(self, int status, str reason)
    cpdef finish_fatal(self)
    cpdef exchange_done(self, Exchange ex, bint close)
    cpdef start_tunnel(self, UpstreamConnection upstream)
    cpdef close(self)
    cpdef abort(self)


@cython.final
cdef class Exchange:
    cdef public ClientConnection client
    cdef public HttpProxy p
    cdef public bytes head, method
    cdef public bint retryable_method, has_body, chunked, keep_alive, http10, expect, upgrading
    cdef public object rid
    cdef public bint needs_host
    cdef public object hash_key
    cdef public bint request_done
    cdef public list chunks, tried
    cdef public double t0
    cdef public Py_ssize_t body_bytes
    cdef public bint body_sent, replayable, started, done, responded, close_client, holds_request
    cdef public UpstreamConnection upstream
    cdef public object endpoint, connecting, timer
    cdef public Py_ssize_t timer_token, tries
    cdef public double try_t0, deadline

    cpdef start(self)
    cpdef attempt(self)
    cpdef send(self, UpstreamConnection conn)
    cpdef request_body(self, tuple pieces, Py_ssize_t size)
    cpdef request_complete(self)
    cpdef bint response_head(self, UpstreamConnection conn, int code, list parts, object clen, bytes codings, object upgrade)
    cpdef response_complete(self, UpstreamConnection conn, int status, bint reusable)
    cpdef response_aborted(self, UpstreamConnection conn, str reason=*)
    cpdef _cancel_timer(self)
    cpdef _release_try(self)
    cpdef upstream_lost(self, UpstreamConnection conn)
    cpdef bint _can_retry(self, bint never_reached)
    cpdef fail(self, int status, str reason)
    cpdef client_failed(self)
    cpdef abandon(self)
    cpdef finish(self, int status, str endpoint, str reason=*, double now=*)


@cython.final
cdef class UpstreamConnection:
    cdef public HttpProxy p
    cdef public object endpoint, pool, transport, parser
    cdef public Exchange ex
    cdef public double idle_since
    cdef public bint in_pool, closed, eof, in_head
    cdef public Py_ssize_t head_bytes, head_pending, quiet
    cdef public list hparts
    cdef public object clen, te
    cdef public bint chunked_in
    cdef public object upgrade
    cdef public list tokens
    cdef public bytes reason
    cdef public list reason_more
    cdef public int status
    cdef public bint informational, discard, head_only, finished, reusable
    cdef public str failure
    cdef public int body_mode
    cdef public list out
    cdef public ClientConnection tunnel

    cpdef _protocol_error(self, Exchange ex, str reason)
    cpdef _fail(self, str reason)
    cpdef _interim(self, Exchange ex, int code, bytes reason, list parts, list tokens)
    cpdef _flush(self, Exchange ex)
    cpdef _become_tunnel(self, Exchange ex, bytes rest)
    cpdef bint usable(self)
    cpdef release(self)
    cpdef close(self)


@cython.final
cdef class SpecialFields:
    cdef public bint chunked, expect
    cdef public object clen, upgrade, rid, hash_key, prior_fwd
    cdef public list tokens


cdef tuple _origin_form(ClientConnection client, bytes method, bytes url)
cdef SpecialFields _special_fields(ClientConnection client)
cdef bytes _upstream_head(ClientConnection client, bytes method, bytes url, object host, list parts, SpecialFields fields, object rid, bint upgrading)
cdef Exchange _new_exchange(ClientConnection client, bytes head, bytes method, object rid, object hash_key, bint has_body, bint chunked, bint keep_alive, bint http10, bint expect, bint upgrading, bint needs_host)
