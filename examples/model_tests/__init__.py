"""A pytest suite about the trained iris model, run by the pipeline's `command` step."""
