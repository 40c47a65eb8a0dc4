"""The study: its command line, its stages and their orchestration, over ``common`` and the arms.

``run_all`` is the command line; ``pipeline`` runs the stages (``data_stage``, each arm's
``arm_stages`` in the arm's own process through ``arm_worker`` and ``units``, ``assess``,
``evaluate`` with ``evaluate_quality`` and ``sweep``, ``report_stage``); ``layout`` holds what
they share (selection, artefact paths, unit configs), ``keys`` and ``sources`` the stage keys
derived from the code, ``stages`` the stamps that let a rerun skip finished stages.
"""
