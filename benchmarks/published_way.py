"""The published notebooks' way of running the PyTorch arm, re-implemented for the benchmark.

How the published notebook ran, and how this file reproduces it on a finished study:

- data: ``torchvision.datasets.ImageFolder`` with
  ``Compose([Resize((S, S)), ToTensor(), Normalize(mean, std)])``, read through a
  ``DataLoader`` (batch 64, ``num_workers=0``), so every JPEG is decoded and resized again
  in every epoch. The files are exactly the study's (``split.csv``): a ``Subset`` of
  ``ImageFolder`` per split, in ``split.csv``'s order. ``mean``/``std`` are the study's
  training-split statistics (the trained model's ``Normalize`` buffers) divided by 255;
- model: the same CNN (``pytorch_impl.cnn.build_model``) with its ``Normalize`` layer
  replaced by ``nn.Identity`` (the published model saw normalised tensors), in PyTorch's
  default memory layout (the project's runs channels-last);
- training: the same SGD settings and seed. The shuffle comes from a
  ``RandomSampler`` holding a generator seeded with the study's seed: its per-epoch
  ``torch.randperm`` is the project's, so both see the same batches. (``shuffle=True``
  with ``DataLoader(generator=g)`` would not: the loader draws a base seed from ``g``
  before every epoch.) Validation on the study's validation files after every epoch;
- explanation: ``shap.DeepExplainer(model, background)`` and
  ``shap.GradientExplainer(model, background)`` with their defaults (``nsamples=200``,
  ``check_additivity=True``, no ``rseed``), one call for the batch of explained images,
  on normalised tensors. The model explained is the *study's* trained model (its
  ``Normalize`` swapped for ``nn.Identity``), so its Deep SHAP maps can be compared with
  the project's pixel for pixel: a per-channel affine normalisation ``x' = (x - m) / s``
  leaves Deep SHAP attributions unchanged (multipliers scale by ``s``, input differences
  by ``1 / s``), and Gradient SHAP's too when its random draws are the same.

:func:`run` is started by :mod:`benchmarks.study` in a process of its own
(:func:`benchmarks.measure.in_child`); it returns the measurements and imports PyTorch only.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset
from torchvision import datasets, transforms

from benchmarks.measure import peak_mb, timed
from common.config import StudyConfig, load_config
from common.data.split import read_split_csv
from common.explanation import Explanation
from common.io import read_json
from common.registry import METHODS
from common.results import StudyMetrics, read_metrics
from common.seeding import image_seeds
from experiments.layout import ArmPaths, prepare_data
from pytorch_impl.cnn import CNN, build_model
from pytorch_impl.cnn_arm import PyTorchArm
from pytorch_impl.config import PyTorchConfig
from pytorch_impl.explain import shap_to_explanation_layout
from pytorch_impl.model import images_to_tensor

log = logging.getLogger("published_way")

SHAP_GRADIENT_DEFAULT_NSAMPLES = 200  # shap.GradientExplainer.shap_values(nsamples=200)
PUBLISHED_BATCH_SIZE = 64  # the published DataLoader's batch size


# ----------------------------------------------------------------------------- data, as published


def published_transform(image_size: int, mean: list[float], std: list[float]) -> transforms.Compose:
    """The published transform: Pillow bilinear resize, [0, 1] tensor, per-channel normalisation."""
    resize = transforms.Resize((image_size, image_size))  # PIL: Image.resize(..., BILINEAR), as common/data/decode.py
    return transforms.Compose([resize, transforms.ToTensor(), transforms.Normalize(mean, std)])  # ToTensor: / 255


def split_subsets(
    root: Path, rows: list[dict[str, str]], classes: list[str], transform: transforms.Compose
) -> dict[str, Subset]:
    """One ``Subset`` of ``ImageFolder`` per split, holding exactly ``split.csv``'s files in its order.

    An ``ImageFolder`` is built on each folder that holds class folders (``train/``,
    ``test/`` or the root), accepting only the listed files.

    Raises:
        RuntimeError: ImageFolder's classes or labels differ from the study's.
    """
    by_top: dict[Path, set[str]] = defaultdict(set)
    for r in rows:
        path = os.path.normpath(root / r["path"])
        by_top[Path(path).parent.parent].add(path)
    index: dict[str, tuple[datasets.ImageFolder, int]] = {}
    for top, wanted in by_top.items():
        folder = datasets.ImageFolder(
            str(top), transform=transform, is_valid_file=lambda p, w=wanted: os.path.normpath(p) in w
        )
        if folder.classes != classes:
            raise RuntimeError(f"ImageFolder({top}) found classes {folder.classes}, the study {classes}")
        for i, (path, _) in enumerate(folder.samples):
            index[os.path.normpath(path)] = (folder, i)
    subsets: dict[str, Subset] = {}
    for split in ("train", "val", "test"):
        picked = [r for r in rows if r["split"] == split]
        folders = {id(index[os.path.normpath(root / r["path"])][0]) for r in picked}
        if len(folders) != 1:
            raise RuntimeError(f"the {split} split spans {len(folders)} top folders; expected one")
        folder = index[os.path.normpath(root / picked[0]["path"])][0]
        idx = [index[os.path.normpath(root / r["path"])][1] for r in picked]
        for r, i in zip(picked, idx, strict=True):
            if folder.targets[i] != classes.index(r["label"]):
                raise RuntimeError(f"label of {r['path']} differs between ImageFolder and split.csv")
        subsets[split] = Subset(folder, idx)
    return subsets


def stack(subset: Subset, positions: np.ndarray) -> torch.Tensor:
    """The transformed images at ``positions`` of ``subset``, float32 (N, C, H, W)."""
    return torch.stack([subset[int(i)][0] for i in positions])


# ----------------------------------------------------------------------------- model and training, as published


def published_model(n_classes: int, image_size: int) -> CNN:
    """The study's CNN taking normalised tensors: its Normalize layer is an ``nn.Identity``,
    and its weights in PyTorch's default (contiguous NCHW) memory layout, as published."""
    model = build_model(n_classes, image_size)  # Normalize holds buffers only: initial weights unchanged
    model.normalize = nn.Identity()
    return model.to(memory_format=torch.contiguous_format)


def study_model_on_normalised_inputs(path: Path) -> tuple[CNN, np.ndarray, np.ndarray]:
    """The study's trained CNN with Normalize swapped for Identity, and its mean and std (0..255 scale)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["state_dict"])
    mean = model.normalize.mean.double().numpy()
    std = model.normalize.std.double().numpy()
    model.normalize = nn.Identity()
    return model.to(memory_format=torch.contiguous_format).eval(), mean, std


def waited(loader: DataLoader, clock: list[float]):
    """The loader's batches, adding the seconds spent waiting for each (decoding, resizing) to ``clock[0]``."""
    batches = iter(loader)
    while True:
        batch, seconds = timed(next, batches, None)
        clock[0] += seconds
        if batch is None:
            return
        yield batch


def train_epoch(model: nn.Module, loader: DataLoader, optimizer, clock: list[float]) -> tuple[float, float]:
    """One epoch of the published loop: mean training loss and accuracy."""
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    for images, labels in waited(loader, clock):  # (B, C, H, W) normalised float32, (B,) int64
        optimizer.zero_grad()
        outputs = model(images)
        loss = nn.functional.cross_entropy(outputs, labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(labels)
        correct += (outputs.argmax(1) == labels).sum().item()
        n += len(labels)
    return loss_sum / n, correct / n


def train_published(
    model: nn.Module, train_set: Subset, val_set: Subset, cfg: PyTorchConfig, seed: int
) -> dict[str, Any]:
    """The published loop: DataLoader batches (decoded every epoch), SGD, validation after each epoch.

    Returns:
        ``history`` (the project's keys), ``seconds`` (the whole fit), ``epoch_seconds`` and
        ``data_seconds`` (time spent waiting for the DataLoader: decoding and resizing).
    """
    torch.manual_seed(seed)  # as the project's train(); the CNN itself draws nothing while training
    sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    history: dict[str, list[float]] = {k: [] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    epoch_seconds, clock = [], [0.0]
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t_epoch = time.perf_counter()
        train_loss, train_acc = train_epoch(model, train_loader, optimizer, clock)
        val_loss, val_acc, _ = evaluate_loader(model, val_loader, clock)
        for key, value in zip(history, (train_loss, train_acc, val_loss, val_acc), strict=True):
            history[key].append(value)
        epoch_seconds.append(time.perf_counter() - t_epoch)
        log.info(
            "published way: epoch %d/%d, val accuracy %.3f, %.1f s", epoch + 1, cfg.epochs, val_acc, epoch_seconds[-1]
        )
    model.eval()
    return {
        "history": history,
        "seconds": time.perf_counter() - start,
        "epoch_seconds": epoch_seconds,
        "data_seconds": clock[0],
    }


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: DataLoader, clock: list[float]) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and predicted classes; the seconds spent waiting for batches go to ``clock[0]``."""
    model.eval()
    loss_sum, correct, preds = 0.0, 0, []
    for images, labels in waited(loader, clock):
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        preds.append(logits.argmax(1))
    n = len(loader.dataset)
    return loss_sum / n, correct / n, torch.cat(preds).numpy()


# ----------------------------------------------------------------------------- explanation, as published


def explain_published(model: nn.Module, x: torch.Tensor, background: torch.Tensor, nsamples: int) -> dict[str, Any]:
    """shap's explainers with their defaults, one call for all images, timed (set-up included)."""
    import shap

    t0 = time.perf_counter()
    try:
        deep = shap.DeepExplainer(model, background)
        values = deep.shap_values(x)  # check_additivity=True, as published
        expected = np.asarray(deep.expected_value, dtype=np.float64)
        result = {"deep": {"seconds": time.perf_counter() - t0, "values": shap_to_explanation_layout(values)}}
        result["deep"]["expected_value"] = expected
    except AssertionError as exc:  # shap's additivity check (tolerance 1e-2) failed
        result = {"deep": {"seconds": time.perf_counter() - t0, "error": str(exc).splitlines()[0]}}
    # GradientExplainer: batch_size=50, local_smoothing=0; no rseed, as published
    values, seconds = timed(lambda: shap.GradientExplainer(model, background).shap_values(x, nsamples=nsamples))
    result["gradient"] = {"seconds": seconds, "values": shap_to_explanation_layout(values), "nsamples": nsamples}
    return result


def compare_maps(published: np.ndarray, project: Explanation) -> dict[str, float]:
    """Max |difference| of the published (N, K, H, W, C) maps from the project's maps of the
    classes it explained, absolute and relative to the largest attribution."""
    rows, cols = np.nonzero(project.explained_classes >= 0)
    ours = project.attributions[rows, cols].astype(np.float64)
    theirs = published[rows, project.explained_classes[rows, cols]].astype(np.float64)
    diff = float(np.max(np.abs(theirs - ours)))
    scale = float(np.max(np.abs(ours)))
    return {
        "maps": int(len(rows)),
        "max_abs_diff": diff,
        "max_abs_attribution": scale,
        "max_rel_diff": diff / scale if scale else 0.0,
    }


# ----------------------------------------------------------------------------- the whole comparison

DIFFERENCES = [
    "normalisation outside the model (transforms.Normalize on [0, 1] tensors) vs inside it (Normalize layer "
    "on 0..255 pixels): equal up to float32 rounding (inputs_max_abs_diff)",
    "resize: both are Pillow's bilinear resize of the RGB image to uint8 (torchvision's Resize on a PIL "
    "image calls Image.resize), then a float cast: no extra uint8 round trip on either side (pixels check)",
    "RGB conversion: torchvision's loader converts straight to RGB, the project goes through RGBA for "
    "palette images with transparency; the same for RGB JPEGs",
    "validation: the study's validation files here (the published notebook validated on test/); "
    "it does not change training",
    "shuffling: a RandomSampler with a seeded generator (the project's order); the published notebook's "
    "shuffle was unseeded",
    "normalisation constants: the study's training-split statistics; the published values are not used",
]
SAME_RESULTS_NOTE = (
    "same files, seed, initial weights, batches and SGD settings; the inputs differ only by float rounding "
    "(ToTensor's /255 then Normalize(mean/255, std/255) vs the model's (x - mean) / std on 0..255 pixels), "
    "which training may amplify"
)


class Inputs(NamedTuple):
    """A finished study as the published way reads it."""

    study: Path
    cfg: StudyConfig
    metrics: StudyMetrics
    paths: ArmPaths  # the PyTorch arm's artefacts
    subsets: dict[str, Subset]  # split.csv's files through ImageFolder and the published transform
    x_test: np.ndarray  # the project's decoded test images, uint8 (N, H, W, C)
    model: CNN  # the study's trained CNN on normalised inputs
    mean255: np.ndarray  # its Normalize layer's mean and std, 0..255 scale
    std255: np.ndarray


def check_pixels(test_set: Subset, x_test_project: np.ndarray, image_size: int) -> dict[str, Any]:
    """torchvision's Resize on every test image's PIL image vs the project's decoded uint8 pixels."""
    resize = transforms.Resize((image_size, image_size))
    folder: datasets.ImageFolder = test_set.dataset  # type: ignore[assignment]
    worst, n_diff = 0, 0
    for k, i in enumerate(test_set.indices):
        pixels = np.asarray(resize(folder.loader(folder.samples[i][0])), dtype=np.int16)
        delta = int(np.max(np.abs(pixels - x_test_project[k].astype(np.int16))))
        worst, n_diff = max(worst, delta), n_diff + (delta > 0)
    return {
        "checked": "every test image: torchvision Resize((S,S)) on default_loader's image vs the "
        "project's decoded uint8 pixels",
        "n_images": len(test_set),
        "n_images_differing": n_diff,
        "max_abs_diff": worst,
        "identical": worst == 0,
    }


def train_and_compare(inp: Inputs, n_classes: int, image_size: int) -> dict[str, Any]:
    """Train and test the published way; compare accuracy, predictions and weights with the study's arm."""
    cfg, subsets = inp.cfg, inp.subsets
    settings: PyTorchConfig = cfg.arm(PyTorchArm.spec.key)
    log.info(
        "published way: training %d epochs on %d images, decoding every epoch", settings.epochs, len(subsets["train"])
    )
    torch.manual_seed(cfg.seed)  # as PyTorchArm.create: the initial weights depend on the seed alone
    model = published_model(n_classes, image_size)
    fit = train_published(model, subsets["train"], subsets["val"], settings, cfg.seed)
    test_loader = DataLoader(subsets["test"], batch_size=PUBLISHED_BATCH_SIZE, shuffle=False)
    (_, test_acc, test_pred), test_seconds = timed(evaluate_loader, model, test_loader, [0.0])
    with np.load(inp.paths.predictions) as z:
        project_pred = z["probabilities"].argmax(1)
    project_params = dict(inp.model.named_parameters())
    param_diff = max(float((p.detach() - project_params[n].detach()).abs().max()) for n, p in model.named_parameters())
    return {
        "train": {**fit, "epochs": settings.epochs, "test_seconds": test_seconds},
        "test_accuracy": test_acc,
        "same_results": {
            "project_test_accuracy": inp.metrics.models[PyTorchArm.spec.name].test_accuracy,
            "published_test_accuracy": test_acc,
            "n_test": len(test_pred),
            "n_test_predictions_differing": int(np.sum(test_pred != project_pred)),
            "max_abs_weight_diff": param_diff,
            "note": SAME_RESULTS_NOTE,
            "differences": DIFFERENCES,
        },
    }


def gradient_with_project_draws(
    model: nn.Module, background: torch.Tensor, x: torch.Tensor, project: Explanation, seed: int, pixels: np.ndarray
) -> dict[str, Any]:
    """Gradient SHAP draws at random: explain again with the project's draws (its nsamples and
    each image's rseed, :func:`common.seeding.image_seeds` of its uint8 ``pixels``) and compare."""
    import shap

    explainer = shap.GradientExplainer(model, background)
    state = np.random.get_state()
    try:
        values = [
            shap_to_explanation_layout(explainer.shap_values(x[i : i + 1], nsamples=project.nsamples, rseed=int(s)))
            for i, s in enumerate(image_seeds(seed, pixels))
        ]
    finally:
        np.random.set_state(state)
    rseed = f"per image, from seed {seed}"
    return {"nsamples": project.nsamples, "rseed": rseed, **compare_maps(np.concatenate(values), project)}


def compare_explanations(inp: Inputs, explained: dict[str, Any], x_norm, bg_norm, pixels) -> dict[str, Any]:
    """The published way's maps against the project's (Gradient SHAP: again, with the project's draws)."""
    deep, compared = explained["deep"], {"deep": {}, "gradient": {}}
    if "error" in deep:
        compared["deep"]["error"] = deep["error"]
    elif inp.paths.attributions("deep").exists():
        project_deep = Explanation.load(inp.paths.attributions("deep"))
        compared["deep"]["vs_project"] = {
            **compare_maps(deep["values"], project_deep),
            "expected_value_max_abs_diff": float(np.max(np.abs(deep["expected_value"] - project_deep.base_values))),
        }
    if inp.paths.attributions("gradient").exists():
        project_gradient = Explanation.load(inp.paths.attributions("gradient"))
        compared["gradient"]["vs_project_same_draws"] = gradient_with_project_draws(
            inp.model, bg_norm, x_norm, project_gradient, inp.cfg.seed, pixels
        )
    return compared


def explain_and_compare(inp: Inputs, nsamples: int) -> dict[str, Any]:
    """Explain the study's model the published way on the study's images and background; compare the
    inputs and the maps with the project's."""
    with np.load(inp.study / "data" / "selection.npz") as sel:
        explain_idx, background_idx = sel["explain_idx"], sel["background_idx"]
    x_norm = stack(inp.subsets["test"], explain_idx)  # (N, C, H, W) normalised
    bg_norm = stack(inp.subsets["train"], background_idx)  # (B, C, H, W)
    mean, std = (torch.as_tensor(v, dtype=torch.float32)[:, None, None] for v in (inp.mean255, inp.std255))
    project_norm = (images_to_tensor(inp.x_test[explain_idx]).float() - mean) / std
    n, k, b = len(x_norm), inp.model.n_classes, len(bg_norm)
    log.info("published way: explaining %d images against %d background images (nsamples %d)", n, b, nsamples)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="shap")
        explained = explain_published(inp.model, x_norm, bg_norm, nsamples)
    compared = compare_explanations(inp, explained, x_norm, bg_norm, inp.x_test[explain_idx])
    passes = {m: METHODS[m].passes(n, k, b, nsamples) for m in ("deep", "gradient")}
    out: dict[str, Any] = {
        "model": "the study's trained CNN with Normalize swapped for nn.Identity, on normalised inputs",
        "n_images": n,
        "n_classes": k,
        "n_background": b,
        "deep": {"seconds": explained["deep"]["seconds"], "passes": passes["deep"], **compared["deep"]},
        "gradient": {"seconds": explained["gradient"]["seconds"], "nsamples": nsamples, "passes": passes["gradient"]},
    }
    out["gradient"].update(compared["gradient"])
    return {"inputs_max_abs_diff": float((x_norm - project_norm).abs().max()), "explain": out}


def run(study: str, nsamples: int = SHAP_GRADIENT_DEFAULT_NSAMPLES) -> dict[str, Any]:
    """Train, evaluate and explain the published way on the study in ``study``; return the measurements."""
    cfg: StudyConfig = load_config(Path(study) / "config.yaml")
    if cfg.data.root is None:
        raise ValueError("the published way reads image files: the study must use an image folder, not digits")
    metrics = read_metrics(read_json(Path(study) / "metrics.json"))
    classes, image_size = list(metrics.dataset.classes), int(metrics.dataset.image_size)
    paths = ArmPaths.of(Path(study), PyTorchArm.spec)
    model, mean255, std255 = study_model_on_normalised_inputs(paths.model)
    mean, std = (mean255 / 255.0).tolist(), (std255 / 255.0).tolist()
    root, rows = Path(cfg.data.root).expanduser().resolve(), read_split_csv(Path(study) / "split.csv")
    subsets = split_subsets(root, rows, classes, published_transform(image_size, mean, std))
    x_test, _ = prepare_data(cfg).arrays("test")
    inp = Inputs(Path(study), cfg, metrics, paths, subsets, x_test, model, mean255, std255)
    settings: PyTorchConfig = cfg.arm(PyTorchArm.spec.key)
    return {
        "how": "torchvision ImageFolder + Compose([Resize((S,S)), ToTensor(), Normalize(mean, std)]) decoded every "
        f"epoch through a DataLoader (batch {settings.batch_size}, num_workers 0, seeded RandomSampler); "
        "the same CNN and SGD settings; shap explainers with their defaults, one call per image batch",
        "normalize": {
            "mean": mean,
            "std": std,
            "source": "the study's training-split statistics (the trained model's Normalize buffers) / 255",
        },
        "counts": {s: len(v) for s, v in subsets.items()},
        "torch_num_threads": torch.get_num_threads(),
        "pixels": check_pixels(subsets["test"], x_test, image_size),
        **train_and_compare(inp, len(classes), image_size),
        **explain_and_compare(inp, nsamples),
        "max_rss_mb": peak_mb(),
    }
