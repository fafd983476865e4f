"""Built-in energies."""
