"""eBPF without a compiler: programs written in Python, loaded with the bpf() system call.

Pure and below the collectors, importing nothing of them:

* :mod:`exporter.bpf.asm`: a small assembler for the eBPF instructions these programs use
  (encoding only; no kernel needed).
* :mod:`exporter.bpf.tracefs`: finds (or mounts) tracefs and reads a tracepoint's id and the
  offsets of its record's fields from its ``format`` file, so no offset is hard-coded.
* :mod:`exporter.bpf.syscalls`: bpf(), perf_event_open() and ioctl() through ctypes: maps,
  program load (with the verifier's log on failure), attach to a tracepoint, iterator links
  and runs.
* :mod:`exporter.bpf.tcpevents`: the TCP event programs (built from the formats) and their
  loader and reader, used by the ``tcpevents`` collector.
* :mod:`exporter.bpf.tcpiter`: the program the kernel's TCP socket iterator runs to count a
  large TCP table in the kernel, and its reader, used by the socket snapshot
  (:mod:`exporter.sockets.snapshot`).
* :mod:`exporter.bpf.tcpbound`: the program the kernel's task-file iterator runs to find the
  TCP sockets bound but idle, which the TCP iterator does not see, without a sock_diag dump.

Nothing is pinned: every map, program and perf event is held by a file descriptor of this
process only, so the kernel unloads everything when the process exits, however it exits.
"""
