"""checkgate's gateway: a single-process Tornado server that runs checks on Celery workers."""
