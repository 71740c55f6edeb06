"""The dashboard: one web page over the platform, with a login (docs/dashboard.md).

A tenant sees its own receipts, quarantine, stream and keyspace; the operator sees every tenant and the
platform's health. The page is static HTML and JavaScript (``static/``, with uPlot for the plots) polling JSON
endpoints (``views.py``) that read through the platform's own library code: ``mysimbdp/jobs.py`` for
receipts, ``batchingestmanager/uploads.py`` for the quarantine and replays, ``streamingestmanager`` for
streams, ``mysimbdp/services/platform.py`` for health. Logins are those of the APIs (``mysimbdp/auth.py``),
kept in a signed cookie (``sessions.py``).
"""
