"""The handlers: the original project's route, the OpenAI relay, and the ops endpoints."""
