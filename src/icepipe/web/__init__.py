"""``icepipe web``: a read-only web catalog of repositories, their history, arrays and pipelines.

Layout (the top of the import graph, beside :mod:`icepipe.cli`; nothing in icepipe imports it):

- :mod:`icepipe.web.config` -- :class:`WebConfig` (what the server shows) and
  :func:`known_repos` (the repositories of the catalog and of the pipelines given);
- :mod:`icepipe.web.app` -- :func:`create_app`, the Starlette application: templates, error
  pages, the routes of every module of :mod:`icepipe.web.pages`;
- :mod:`icepipe.web.pages` -- one module per page family, each exporting ``ROUTES`` (HTML pages
  and the JSON API under ``/api/`` for the same data);
- :mod:`icepipe.web.server` -- :func:`serve`, uvicorn on 127.0.0.1 unless told otherwise
  (then answering loopback host names only);
- :mod:`icepipe.web.workers` -- the bounded pool of threads that read repositories (a 503
  "busy" when full);
- :mod:`icepipe.web.text` -- text from repositories made safe to show (not UTF-8, too long);
- :mod:`icepipe.web.lazy_zarr` -- zarr arrays xarray will not open, as lazy xarray variables.

Starlette, Jinja2, uvicorn and matplotlib come with the ``web`` extra
(``pip install 'icepipe[web]'``).
"""

from __future__ import annotations
