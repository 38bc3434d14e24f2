"""Data sets: the bundled digits, user files, text."""
