"""The core: run specs and their hashes, registries, records, files and locks, errors, the
runtime (device, precision), the verified cache and reference records. Depends on nothing else
of ``bench``."""
