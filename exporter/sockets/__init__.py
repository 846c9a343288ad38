"""The socket tables of a network namespace, read once per scrape for every collector.

Public API (everything else in the package is internal):

* :class:`~exporter.sockets.snapshot.Snapshot` ``(procfs="/proc", source="auto", *,
  netlink=None, wants=Wants())``: the sockets of one network namespace. ``procfs`` is the /proc
  root whose ``net/`` and ``sys/net/`` belong to that namespace (``/proc``, or ``/proc/<pid>``
  for the namespace of process ``<pid>``); ``netlink`` is an open NETLINK_SOCK_DIAG socket of
  that namespace (kept open; e.g. one opened by a thread that entered the namespace with
  setns) or a factory for one (default: opened in the calling thread's namespace and closed by
  ``close()``); ``source`` is ``auto`` (for a TCP table of 2,000 sockets or more in the
  calling thread's own namespace the kernel's socket iterator where it loads, then netlink,
  then /proc/net, then psutil off Linux), ``bpf``, ``netlink``, ``procfs`` or ``psutil``;
  ``wants`` (:class:`Wants`) says what to decode beyond counts. ``snap.inet("tcp")`` (also
  ``udp``, ``udplite``, ``raw``) gives an :class:`~exporter.vocabulary.model.InetTables` or
  None (no data), reading the table on first use and never again; ``snap.unix()`` an
  :class:`~exporter.vocabulary.model.UnixTables` or None; ``snap.ephemeral()`` the ephemeral
  port range; ``snap.dumps`` the netlink dumps made. Use it as a context manager or call
  ``close()``.
* :class:`~exporter.sockets.snapshot.ScrapeSockets`: the snapshots of one scrape, one per
  (procfs root, source), built by the scrape with the merged wants of its collectors.
* :mod:`exporter.vocabulary.names`: the one table of state names, families and protocols.

Every dumped source feeds the same one-pass decoder (:mod:`exporter.sockets.onepass`), and
the iterator's program (:mod:`exporter.bpf.tcpiter`) counts the same in the kernel, so every
collector works on every source.
"""
