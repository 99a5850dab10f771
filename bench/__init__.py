"""Load benchmark of the Clinics API: gunicorn on PostgreSQL driven by wrk. See bench/README.md."""
