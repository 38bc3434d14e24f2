"""What combines methods and metrics: recipes, case studies, curves, the pages' background jobs."""
