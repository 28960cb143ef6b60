"""The float graph: loading, saving and the convert passes."""
