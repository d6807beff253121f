"""System tests: the packaged product on a cluster of booted containers (issue 5)."""
