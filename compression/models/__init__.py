"""Every model format: the zoo, safe loading, the compact format, Hugging Face folders."""
