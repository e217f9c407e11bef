"""Command-line programs, also installed as console entry points.

`cropjax-train`, `cropjax-eval`, `cropjax-predict` and `cropjax-annotate` run
`train.run`, `evaluate.run`, `predict.main` and `annotate.main`; the scripts in
the repository's `scripts/` folder are the same programs.
"""
