"""What a registered version's evaluation looks like to a reader: plots, model card, HTML report.

Shared by the evaluate-and-register stage and ``bench/evaluate_report.py``, so that what a benchmark times is
what a pipeline run renders. ``findings`` gathers the facts once; ``plots``, ``model_card`` and ``report``
render them. Nothing here talks to MLflow or the registry: the stage uploads what these functions return.
"""
