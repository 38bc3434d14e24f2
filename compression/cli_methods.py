"""CLI commands of the compression methods (registered into compression.cli.COMMANDS)."""
from __future__ import annotations
