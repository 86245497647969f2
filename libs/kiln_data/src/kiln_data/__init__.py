"""Training data access for Kiln dataset versions."""
