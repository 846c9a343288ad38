"""macOS's own tables, for :mod:`exporter.system._darwin`: ``netstat -s``, ``-r`` and ``-an``
without root.

Two halves, kept apart so that the part which cannot run off macOS is small and reads line by
line against Apple's headers:

* :mod:`~exporter.darwin.sysctl`: the calls (libc's ``sysctlbyname`` and ``sysctl`` through
  ctypes, buffer sizing, errno), returning raw bytes;
* :mod:`~exporter.darwin.decode`: pure functions from those bytes to the seam's vocabulary
  (:mod:`exporter.system.common`), tested on every system against structures built from the
  xnu layouts.

Both import on any system; libc is loaded on the first call, never at import.
"""
