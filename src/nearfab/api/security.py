"""HTTP hardening for the web pages and the API: security headers on every response, and a
throttle on password guessing at login, token issue and e-signatures (`throttled`), keyed by
the client address (`client_address`: X-Forwarded-For only from NEARFAB_TRUSTED_PROXIES).

The Content-Security-Policy allows scripts, styles, images and connections from this site
only: nothing can load from a CDN or leak to another host, even if a template were wrong.
Plotly sets inline styles on the chart elements, hence `style-src 'unsafe-inline'`; scripts
have no such exception (no inline `<script>` in any template)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nearfab.common.errors import DomainError, Unauthenticated

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if _has_nul(request):
            # PostgreSQL text cannot hold NUL: refuse it here as bad input, not as a 500 later
            response: Response = JSONResponse(
                status_code=422,
                content={
                    "error": {
                        "code": "validation_failed",
                        "field": "$",
                        "message": "the request's path or query holds a NUL character",
                    }
                },
            )
        else:
            response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            # pages and API answers carry patient and batch data: never keep them in a cache
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _has_nul(request: Request) -> bool:
    raw = request.scope.get("query_string", b"") + request.scope.get("raw_path", b"")
    return b"%00" in raw or b"\x00" in raw or "\x00" in request.url.path


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    http_status = 429


class LoginThrottle:
    """At most `limit` failed password checks per username and client in `window_s` seconds;
    more are refused before the password is even checked. In memory, per process: it slows a
    guesser down, it is not the account lockout of the identity service.

    Memory is bounded: keys whose failures are all older than the window are dropped as new
    failures come in, and past `max_keys` the key whose last failure is oldest goes first."""

    def __init__(
        self,
        limit: int = 5,
        window_s: float = 300.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        # injectable so a test can move time on without sleeping (a slow machine's password
        # checks must not outlast a short real window)
        self.clock = clock
        self.window_s = window_s
        self.max_keys = max_keys
        # key -> failure times; ordered by last failure (least recent first)
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _evict(self, now: float) -> None:
        # least recently failed first: stop at the first key still inside the window
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times and now - times[-1] <= self.window_s and len(self._failures) < self.max_keys:
                break
            del self._failures[key]

    def check(self, username: str, client: str) -> None:
        key = (username.strip().lower()[:200], client)
        now = self.clock()
        with self._lock:
            times = self._recent(key, now)
            if len(times) >= self.limit:
                wait = int(self.window_s - (now - times[0])) + 1
                raise TooManyAttempts(
                    f"too many failed log-ins for {username[:64]!r}; try again in {wait} s",
                    field="username",
                )

    def failed(self, username: str, client: str) -> None:
        key = (username.strip().lower()[:200], client)
        now = self.clock()
        with self._lock:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
            self._evict(now)

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop((username.strip().lower()[:200], client), None)


def parse_proxies(value: str | Iterable[str] | None) -> tuple[IPv4Network | IPv6Network, ...]:
    """NEARFAB_TRUSTED_PROXIES: comma-separated addresses or CIDR networks (empty: none)."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    nets = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            nets.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
    return tuple(nets)


def _trusted(host: str, proxies: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in proxies)


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    proxies: Sequence[IPv4Network | IPv6Network],
) -> str:
    """The client a request counts as (for the login throttle). X-Forwarded-For is believed
    only when the TCP peer is a trusted proxy; then the client is the right-most address in
    it that is not itself a trusted proxy (what a proxy appended, not what a client typed)."""
    host = peer or "unknown"
    if not proxies or not forwarded_for or not _trusted(host, proxies):
        return host
    hops = [h.strip() for h in forwarded_for.split(",")[-20:] if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            try:
                return str(ip_address(hop))
            except ValueError:
                return host  # a hop that is no address: keep the peer
    return hops[0] if hops else host


@contextmanager
def throttled(throttle: LoginThrottle, username: str, client: str) -> Iterator[None]:
    """Wrap a password check (a login or an e-signature): refused with 429 while the username
    has `limit` recent failures from this client; an Unauthenticated failure counts, a success
    clears the count. The account lockout (identity) counts failures from every client."""
    throttle.check(username, client)
    try:
        yield
    except Unauthenticated as exc:
        if exc.code not in _NOT_GUESSES:
            throttle.failed(username, client)
        raise
    throttle.succeeded(username, client)


# refusals that do not test a secret: a missing component is not a guess
_NOT_GUESSES = frozenset({"username_required", "totp_required"})
