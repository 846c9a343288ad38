"""Windows's own calls and the decoding of their answers, kept apart.

:mod:`exporter.windows.iphlpapi` is the call plumbing (the DLL, argument and result types,
error codes, buffer sizing): the only part that runs on Windows alone, small enough to read line
by line against Microsoft's headers. :mod:`exporter.windows.decode` turns the raw structures
those calls fill into the seam's vocabulary (:mod:`exporter.system.common`); it is pure Python,
imports anywhere, and is tested here on structures built from the documented layouts and on the
real calls made under Wine (tests/test_windows_wine.py).
"""
