"""``netstat-exporter show`` and ``top``: the exposition the collectors produce, read as a
netstat would print it.

Everything shown comes from one text exposition, collected locally as ``dump`` does or read
from a running exporter (``--url``), so the terminal shows exactly what Prometheus scrapes.
:mod:`.source` gets the text, :mod:`.reading` parses it, one module per view turns it into
tables (:mod:`.table`), which are printed as plain text or JSON; :mod:`.top` redraws a
summary every few seconds. Metric names are never spelt out here: they come from the
collectors' declarations.
"""
