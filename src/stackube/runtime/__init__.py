"""Container runtimes of a Stackube node beside runc: gVisor's runsc (docs/runtimes.md)."""
