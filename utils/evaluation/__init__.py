"""Evaluating multimodal models (chapter 7): the benchmarks' scoring rules, a harness, uncertainty.

- :mod:`~utils.evaluation.vqa`: VQA accuracy with the official answer normalisation (VQAv2, TextVQA, VizWiz);
- :mod:`~utils.evaluation.choice`: multiple-choice prompts, answer extraction, CircularEval (MMBench);
- :mod:`~utils.evaluation.hallucination`: CHAIR (POPE is ``utils.llava.pope_questions``);
- :mod:`~utils.evaluation.judge`: LLM-as-judge prompts and parsing (LLaVA-Bench, MM-Vet), an offline judge;
- :mod:`~utils.evaluation.stats`: bootstrap intervals, paired tests, questions needed;
- :mod:`~utils.evaluation.harness`: tasks by name, the runner, predictions files;
- :mod:`~utils.evaluation.models`: BLIP-2 and LLaVA wrapped for the harness;
- :mod:`~utils.evaluation.shapes_bench`: the ShapesWorld versions of the benchmarks.
"""
