"""Development tooling, a Django app that only webhooks_project installs (not shipped in the
wheel): the quick-start demo behind `python manage.py webhooks_demo` (`make demo`: its sample
receiver and child processes) and the benchmark behind `python manage.py webhooks_bench`
(issue 7: a loopback receiver, worker processes with a statement counter, the scenarios and
their report; see the README's "Benchmark" section). It imports the apps; they never import it."""
