"""Self-hosted ChatGPT API gateway."""
