"""The checkgate benchmark: checkgate against its peers, on the same workers, in the same run.

`python -m bench` starts one isolated worker pool (its own queue prefix and Redis db), then, round
after round, runs every scenario against every contender — checkgate, the blocking Flask+gunicorn
gateway of the original article, Flower's apply API, and the floor (Celery's own client, no HTTP) —
and writes medians, ratios and plots to bench/results/. See `python -m bench --help`.

Modules: scenarios (what is measured), stack (workers, processes, isolation), contenders (how each
peer is started and addressed), load (wrk), floor (the no-HTTP client), harness (the run loop),
report (JSON, Markdown, plots), machine (what the numbers were measured on). The JMeter plans live
apart, in bench/jmeter/.
"""
