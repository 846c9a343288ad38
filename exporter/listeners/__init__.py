"""What the listeners collector (:mod:`exporter.collectors.listeners`) needs beyond the socket
snapshot, and nothing else uses:

* :mod:`exporter.listeners.owners`: which process holds each listening socket, found by walking
  /proc/<pid>/fd and cached between scrapes by (pid, start time);
* :mod:`exporter.listeners.expected`: the expected-listeners file (``--collector.listeners.
  expected-file``), its matching rules and their checks at start.
"""
