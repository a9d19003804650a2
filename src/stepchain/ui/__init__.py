"""A live view of a running agent: ``stepchain watch RUN_ID`` (terminal) and ``stepchain ui`` (web page).

Both read the runs API (``GET /runs/{id}``, ``GET /runs/{id}/steps/...``, ``GET /runs?workflow=``) and
steer through it (events, cancel, redrive), from one of two :class:`~stepchain.ui.backends.Backend`s:

* :class:`~stepchain.ui.backends.HttpBackend`: a deployed API (AWS or LocalStack), optionally SigV4-signed
  with the local credentials or with an API key header;
* :class:`~stepchain.ui.backends.EngineBackend`: the embedded runtime (``stepchain.runtimes.local``), which has no
  API process: the API handler runs in this process over an engine pointed at the emulator.

The server (:mod:`stepchain.ui.server`) is stdlib-only, binds to 127.0.0.1, serves the page
(``static/``, plain HTML + JS) and proxies the page's ``/api/...`` calls to the backend. The page polls;
it reads its data through one ``source`` object so a progress stream can replace polling later.
"""

from __future__ import annotations

from stepchain.ui.backends import ApiReply, Backend, EngineBackend, HttpBackend
from stepchain.ui.server import UiServer

__all__ = ["ApiReply", "Backend", "EngineBackend", "HttpBackend", "UiServer"]
