"""The socket vocabulary every layer shares, below the readers that produce it.

* :mod:`exporter.vocabulary.names`: kernel state numbers and their names, address families,
  protocols, the /proc/net file of each;
* :mod:`exporter.vocabulary.model`: what a socket reading holds: the one count type
  (:class:`~exporter.vocabulary.model.Counts`), listeners, ephemeral port use, the tables of
  one protocol.

Plain data importing nothing else of the exporter, so that the readers (:mod:`exporter.netlink`,
:mod:`exporter.procfs`) and everything above them (:mod:`exporter.sockets`, the collectors) name
a state or count sockets the same way while imports run downward only.
"""
