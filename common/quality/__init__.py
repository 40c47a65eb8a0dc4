"""Measures of a map's quality, one module per family (as Quantus groups its metrics).

- :mod:`~common.quality.faithfulness`: deletion and insertion curves (Petsiuk et al. 2018,
  "RISE: Randomized Input Sampling for Explanation of Black-box Models"), their areas and the
  fraction of pixels at which a score reaches chance, with pixel orders from a map or, as the
  chance reference, random ones;
- :mod:`~common.quality.randomisation`: the weights of the model-randomisation check
  (Adebayo et al. 2018, "Sanity checks for saliency maps");
- :mod:`~common.quality.agreement`: Spearman rank agreement between maps, the score of the
  sanity checks (randomisation; random logit, Sixt et al. 2020, "When explanations lie") and of
  the comparison of maps across models, seeds and libraries;
- :mod:`~common.quality.complexity`: sparseness as the Gini index (Hurley & Rickard 2009).

Maps are per-image arrays, channel-summed ``(N, H, W)`` unless said otherwise
(:func:`common.explanation.channel_sum`); images are uint8 ``(N, H, W, C)``; a ``predict``
callable maps images to class probabilities ``(M, K)``, so one code path serves every arm.
NumPy and SciPy only: nothing here imports torch or tensorflow. Summaries over images
(intervals, paired tests) are in :mod:`common.stats`.
"""
