"""The exporter's web endpoint, split by job as prometheus/exporter-toolkit splits ``web/``:

* :mod:`~exporter.web.config` reads and validates ``--web.config.file``; its errors are in
  :mod:`~exporter.web.errors`;
* :mod:`~exporter.web.tls` builds the TLS context, :mod:`~exporter.web.auth` checks basic auth;
* :mod:`~exporter.web.state` holds the settings in force and decides which changes a reload may
  apply;
* :mod:`~exporter.web.server` listens and runs connections, :mod:`~exporter.web.handler` serves
  one connection's requests, :mod:`~exporter.web.limits` decides which connection gives way when
  too many are open, :mod:`~exporter.web.singleflight` lets identical concurrent scrapes share
  one collection, :mod:`~exporter.web.telemetry` counts what the server refused.
"""
