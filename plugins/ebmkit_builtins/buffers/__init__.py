"""Built-in buffers."""
