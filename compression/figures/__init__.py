"""Pure figure builders (plotly), one module per page family."""
