"""Export, the run store, reports."""
