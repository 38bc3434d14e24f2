"""What combines methods and metrics: recipes, case studies, curves, the transformer API."""
