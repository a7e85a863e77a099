"""Requests to a web app on the test's own thread, for tests that make thousands of them.

Starlette's `TestClient` runs the app on an event loop in another thread and hands every ASGI
message across (a blocking portal, a new loop for each request unless the client is entered
as a context manager): on the shared two-core machine that cost about half of each request of
tests/identity/test_route_matrix.py. `AsgiLoop` keeps one event loop (`asyncio.Runner`) in the
test's thread and gives clients (`httpx.AsyncClient` over `httpx.ASGITransport`) that call the
app on it. Same requests, same app, same middleware: the handlers' sync code still runs in
AnyIO's worker threads, as under a server. Like `TestClient`: base URL `http://testserver`,
client address `testclient`, redirects followed unless told otherwise, cookies kept per
client, and an exception the app raises is raised in the test (not turned into a 500).

`AsgiLoop.run(thunks)` awaits many requests in one turn of the loop (one AnyIO worker thread
for them all); `AsgiClient.request` is the one-request form.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class AsgiLoop:
    """One event loop, kept open, on which every client made from it runs its app. Where the
    test's thread already runs a loop (Playwright's sync API, started by a browser test earlier
    in the same worker), the loop is run from one thread of its own instead, as `TestClient`
    does for every request."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._thread: ThreadPoolExecutor | None = None

    def _run(self, work: Callable[[], Awaitable[T]]) -> T:
        if not _loop_running_here():
            return self._runner.run(work())
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgi-loop")
        return self._thread.submit(lambda: self._runner.run(work())).result()

    def client(self, app: Any, *, follow_redirects: bool = True) -> AsgiClient:
        return AsgiClient(self, app, follow_redirects=follow_redirects)

    def run(self, thunks: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
        """Await each thunk's result in turn (in order: a request sees the earlier ones'
        writes), all in one run of the loop."""

        async def sequence() -> list[T]:
            return [await thunk() for thunk in thunks]

        return self._run(sequence)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.submit(self._runner.close).result()
            self._thread.shutdown()
        else:
            self._runner.close()


class AsgiClient:
    """A client of one app on an `AsgiLoop`; `request`, `get`, `post` as on `TestClient`."""

    def __init__(self, loop: AsgiLoop, app: Any, *, follow_redirects: bool = True) -> None:
        self.loop = loop
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("testclient", 50000)),
            base_url="http://testserver",
            follow_redirects=follow_redirects,
            headers={"user-agent": "testclient"},
        )

    async def arequest(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run([lambda: self.arequest(method, url, **kwargs)])[0]

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


async def web_login(client: AsgiClient, username: str) -> None:
    """Log `client` in to its web app as `username` (the demo password), as
    `flow_helpers.web_login` does."""
    from tests import flow_helpers as fh

    form = (await client.arequest("GET", "/login")).text
    answer = await client.arequest(
        "POST",
        "/login",
        data={"username": username, "password": fh.TEST_PASSWORD, "csrf_token": fh.csrf(form)},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and "/login" not in answer.headers["location"], answer.text


async def form_token(client: AsgiClient) -> str:
    """The form token of the client's web session (from its account page)."""
    from tests import flow_helpers as fh

    return fh.csrf((await client.arequest("GET", "/account")).text)
