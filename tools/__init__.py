"""Scripts that generate files kept in the repository (run them, commit their output)."""
