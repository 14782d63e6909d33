"""What the rest of the package knows about a detector, in one place: `DetectorSpec`.

Each detector's file (`retinanet.py`, `ssdlite.py`) ends in its spec, as torchvision keeps a detector's traits in
the detector's own file; `fna_zoo.detection.registry` holds the specs by name. Code outside `fna_zoo/detection/`
asks a spec for a trait (its input size, training augmentation, neck, post-processing, ...) and never branches on
a detector's name, so a new detector is a new file and one import line in `fna_zoo/detection/__init__.py`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch
from torch import nn

__all__ = ['DetectorSpec', 'ScoreMode']

ScoreMode = Literal['sigmoid', 'softmax']


@dataclass(frozen=True)
class DetectorSpec:
    """A detector's traits. Calling a spec builds the detector (`DETECTORS['retinanet'](num_classes=3)`), and
    `inspect.signature` of a spec is its builder's, so a spec stands wherever its builder did.

    Args:
        name: Registry and config name (`detector: retinanet`).
        label: Display name (reports, tables).
        build: The builder: keyword-only settings (`model.kwargs`), `backbone=`, `num_classes=`, `seed_weights=`.
        detector_class: The torchvision class the builder returns (or a base of it): how a built detector is
            recognised (`fna_zoo.detection.registry.spec_of`).
        default_backbone: The backbone the builder uses when given none (a registered FNA arch).
        input_size: (H, W) it is benchmarked at by default (FNA's: 800x1088 RetinaNet, 320x320 SSDLite).
        size_kwarg: The builder setting that fixes its square input size (None: it keeps the image's aspect
            ratio, resizing to its min / max size).
        export_size: The fixed (H, W) of its export, from its builder kwargs (`model.kwargs`).
        train_recipe: Its training augmentation, a name of `fna_zoo.data.transforms.TRAIN_RECIPES` (no eval
            transforms: the detector resizes and normalises its input itself).
        neck: Its neck in a built detector, as a module from the backbone's maps (positional) to the list of
            maps the head reads (latency tables time it with the head).
        neck_inputs: The backbone's maps that neck takes, from a built detector and an image batch.
        score_mode: Post-processing: 'sigmoid' (a score per class, top-k per feature level) or 'softmax' (over the
            background and the classes, top-k per class).
        background_class: Index of the background logit in its raw class outputs (None: it has none).
        head_conv: Its backbone keeps the arch's final 1x1 conv (SSDLite reads its output; RetinaNet reads the
            stage ends, so counts and searches leave the head conv out).
        taps_expansion: It reads the expansion of the first layer of the stage going from stride 16 to 32, so a
            search constrains that layer's expansion (`search.space.tap_expansion`).
    """

    name: str
    label: str
    build: Callable[..., nn.Module]
    detector_class: type[nn.Module]
    default_backbone: str
    input_size: tuple[int, int]
    size_kwarg: str | None
    export_size: Callable[[Mapping[str, Any]], tuple[int, int]]
    train_recipe: str
    neck: Callable[[nn.Module], nn.Module]
    neck_inputs: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]
    score_mode: ScoreMode
    background_class: int | None
    head_conv: bool
    taps_expansion: bool

    def __call__(self, **kwargs: Any) -> nn.Module:
        """Build the detector (see `build`)."""
        return self.build(**kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        # NOTE: `inspect.signature(spec)` reads this, so code checking settings against a builder's parameters
        # (`fna_zoo.detection.factory.model_kwargs`) takes a spec as it took the builder function
        return inspect.signature(self.build)
