"""One module per source type, and the runner that drives a harvest job."""
