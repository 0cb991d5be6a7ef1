"""Orchestration: run folders and their provenance (:mod:`.folder`), the phases driven in a run
folder with the NaN policy (:mod:`.drivers`), evaluation and the whole pipeline
(:mod:`.pipeline`), the benchmark of methods on shared tasks (:mod:`.benchmark`), and the
writers of its results (:mod:`.results`) and of a run's report (:mod:`.run_report`)."""
