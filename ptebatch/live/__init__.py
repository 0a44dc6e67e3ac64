"""Live systems: read a running process's page tables from /proc (``procfs``), capture them as a
snapshot (``capture``), and rebuild the LKML thread's layout with a real THP (``reproduce``)."""
