"""Training, evaluation, export and visualization commands for tfnvp (absl flags live here)."""
