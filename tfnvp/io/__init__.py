"""The run-directory format: ``runs`` reads a trainer's run directory (``config.json`` and
checkpoints) back into a model (``tfnvp.load_run``) and is the one definition the trainers
write and resume runs through."""
