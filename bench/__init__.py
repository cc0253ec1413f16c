"""The benchmark behind `python manage.py webhooks_bench` (issue 7): a loopback receiver, worker
processes with a statement counter, the scenarios and their report. See the README's
"Benchmark" section for how to run it and what it measures."""
