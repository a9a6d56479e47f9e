"""Runtime backends, one folder each (loader + runners), looked up through holitom.runtime.registry."""
