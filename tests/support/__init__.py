"""Helpers for tests that run the real stack: RabbitMQ, Redis, Celery workers and the gateway."""
