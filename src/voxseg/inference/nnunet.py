"""Run nnU-Net v2 trained models with voxseg's predictor (no nnU-Net code at run time).

An nnU-Net model folder is ``<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<config>``
with ``plans.json``, ``dataset.json`` and ``fold_<k>/checkpoint_final.pth``. Its
``plans.json`` is converted to a voxseg :class:`~voxseg.planning.plans.Plans` holding the
one configuration the checkpoint was trained with (``init_args.configuration``):

* spacing, patch size, batch size and the median shape as they are (nnU-Net stores them
  in the *transposed* axis order, see below);
* ``normalization_schemes`` + ``use_mask_for_norm`` → voxseg's ``ct`` (with the dataset's
  ``foreground_intensity_properties_per_channel``: mean, std, percentiles 0.5/99.5),
  ``zscore`` (``use_mask``), ``none``, ``rescale_to_0_1``, ``rgb_to_0_1``;
* ``resampling_fn_data_kwargs`` → interpolation order, order along the separate-z axis and
  the anisotropy threshold (``force_separate_z: false`` → never separate);
* the network: ``architecture.network_class_name`` built with ``arch_kwargs`` (the names in
  ``_kw_requires_import`` imported) from ``dynamic-network-architectures``, exactly as
  nnU-Net's ``get_network_from_plans`` does, deep supervision off. Old plans without an
  ``architecture`` entry are converted as nnU-Net's ``ConfigurationManager`` converts them.

**Axis order.** voxseg and nnU-Net (``SimpleITKIO``, ``NibabelIO``) both read arrays as
``[z, y, x]``. nnU-Net then permutes the axes with ``transpose_forward`` (the axis of the
coarsest spacing first): the array the network sees is ``data.transpose(transpose_forward)``
with spacing ``spacing[transpose_forward]``, and predictions are permuted back with
``transpose_backward``. Here the image is permuted the same way before voxseg's
preprocessing (its spacing and the columns of its direction with it, so every voxel keeps
its physical position) and the prediction is permuted back and given the input's geometry
afterwards: an exact relabelling of axes, no interpolation. Models trained with
``NibabelIOWithReorient`` are first reoriented to RAS (voxseg's exact reorientation), then
transposed, and undone in reverse order.

Checkpoints are read with ``torch.load(weights_only=True)``; nnU-Net's checkpoints hold NumPy
scalars in their training log, so NumPy's scalar/array/dtype reconstructors (data only, no
code) are allowed in that load. Network classes (``network_class_name``: an ``nn.Module``
subclass) and their building blocks (``_kw_requires_import``) are imported only as classes
defined in trusted modules (``dynamic_network_architectures``, ``torch.nn``; more with the
environment variable ``VOXSEG_TRUSTED_NETWORK_MODULES``, comma-separated module prefixes),
unless the user trusts the folder's code (``voxseg --trust-code``).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from voxseg._registry import code_trusted
from voxseg.config import read_json
from voxseg.data import DatasetInfo
from voxseg.errors import VoxsegError
from voxseg.inference.model import ModelFolder
from voxseg.io import Image
from voxseg.modelconfig import ModelConfig, NetworkConfig
from voxseg.modelfolder import (
    DATASET,
    NNUNET_CHECKPOINT_FILES,
    PLANS,
    ModelLayout,
)
from voxseg.modelfolder import is_nnunet_model_folder as is_nnunet_model_folder
from voxseg.nets.topology import Topology
from voxseg.planning.plans import (
    ChannelNormalization,
    ConfigurationPlan,
    Plans,
    ResamplingPlan,
)

#: voxseg's checkpoint names → nnU-Net's files in ``fold_<k>``.
CHECKPOINT_FILES = NNUNET_CHECKPOINT_FILES

#: nnU-Net's normalisation classes → voxseg's registered schemes.
NORMALIZATION_SCHEMES = {
    "CTNormalization": "ct",
    "ZScoreNormalization": "zscore",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale_to_0_1",
    "RGBTo01Normalization": "rgb_to_0_1",
}

#: Module prefixes network classes and their building blocks may be imported from.
TRUSTED_MODULES = ("dynamic_network_architectures.", "torch.nn.")

#: Image readers whose arrays are voxseg's ``[z, y, x]`` as read (+ reorientation to apply).
_READERS = {
    "SimpleITKIO": None,
    "NibabelIO": None,
    "NaturalImage2DIO": None,
    "Tiff3DIO": None,
    "NibabelIOWithReorient": "RAS",
}


# ------------------------------------------------------------------------------ plans


def resolve_configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """The configuration ``name`` of an nnU-Net ``plans.json`` with ``inherits_from``
    resolved (parent first, the child's keys win) and old plans given an ``architecture``."""
    configurations = plans.get("configurations", {})
    chain: list[str] = []
    while True:
        if name not in configurations:
            raise VoxsegError(
                f"plans.json has no configuration {name!r}; it has: {', '.join(configurations)}"
            )
        if name in chain:
            raise VoxsegError(f"plans.json: circular 'inherits_from': {' → '.join(chain)}")
        chain.append(name)
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    config: dict[str, Any] = {}
    for n in reversed(chain):
        config.update(copy.deepcopy(configurations[n]))
    if "architecture" not in config:
        config["architecture"] = legacy_architecture(config)
    return config


def legacy_architecture(config: dict[str, Any]) -> dict[str, Any]:
    """``architecture`` of a plans file written before nnU-Net 2.3 (``UNet_class_name`` …),
    as nnU-Net's ``ConfigurationManager`` reconstructs it."""
    classes = {
        "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "ResidualEncoderUNet": (
            "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet"
        ),
    }
    name = config.get("UNet_class_name")
    if name not in classes:
        raise VoxsegError(
            f"plans.json: no 'architecture' and UNet_class_name {name!r} is not one of "
            f"{', '.join(classes)}; rerun nnUNetv2_plan_experiment for this dataset"
        )
    n_stages = len(config["n_conv_per_stage_encoder"])
    dim = len(config["patch_size"])
    blocks = "n_conv_per_stage" if name == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "network_class_name": classes[name],
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [
                min(config["UNet_base_num_features"] * 2**i, config["unet_max_num_features"])
                for i in range(n_stages)
            ],
            "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "kernel_sizes": copy.deepcopy(config["conv_kernel_sizes"]),
            "strides": copy.deepcopy(config["pool_op_kernel_sizes"]),
            blocks: copy.deepcopy(config["n_conv_per_stage_encoder"]),
            "n_conv_per_stage_decoder": copy.deepcopy(config["n_conv_per_stage_decoder"]),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _normalization(
    plans: dict[str, Any], config: dict[str, Any], channel_names: dict[str, str]
) -> list[ChannelNormalization]:
    schemes = config["normalization_schemes"]
    use_mask = config.get("use_mask_for_norm") or [False] * len(schemes)
    if len(schemes) != len(channel_names):
        raise VoxsegError(
            f"plans.json has {len(schemes)} normalization_schemes for "
            f"{len(channel_names)} channels in dataset.json"
        )
    props = plans.get("foreground_intensity_properties_per_channel") or plans.get(
        "foreground_intensity_properties_by_modality", {}
    )
    out = []
    for c, name in enumerate(schemes):
        if name not in NORMALIZATION_SCHEMES:
            raise VoxsegError(
                f"plans.json: normalisation {name!r} (channel {c}) has no voxseg equivalent; "
                f"supported: {', '.join(NORMALIZATION_SCHEMES)}"
            )
        scheme = NORMALIZATION_SCHEMES[name]
        params: dict[str, Any] = {}
        if scheme == "ct":
            p = props.get(str(c))
            if p is None:
                raise VoxsegError(
                    f"plans.json: CTNormalization of channel {c} needs "
                    "foreground_intensity_properties_per_channel, which is missing"
                )
            params = {
                "mean": float(p["mean"]),
                "std": float(p["std"]),
                "lower": float(p["percentile_00_5"]),
                "upper": float(p["percentile_99_5"]),
            }
        elif scheme == "zscore":
            params = {"use_mask": bool(use_mask[c])}
        out.append(
            ChannelNormalization(
                channel=c,
                channel_name=channel_names[str(c)],
                scheme=scheme,
                params=params,
                rule=f"nnU-Net plans.json: {name}, use_mask_for_norm={bool(use_mask[c])}",
            )
        )
    return out


def _resampling(config: dict[str, Any]) -> ResamplingPlan:
    fn = config.get("resampling_fn_data", "resample_data_or_seg_to_shape")
    kw = config.get("resampling_fn_data_kwargs", {}) or {}
    if fn == "resample_data_or_seg_to_shape":
        order, order_z = int(kw.get("order", 3)), int(kw.get("order_z", 0))
    elif fn == "resample_torch_fornnunet":
        order = 0 if kw.get("is_seg") else 1
        order_z = 0 if kw.get("aniso_axis_mode", "nearest-exact").startswith("nearest") else 1
    else:
        raise VoxsegError(
            f"plans.json: resampling function {fn!r} has no voxseg equivalent "
            "(supported: resample_data_or_seg_to_shape, resample_torch_fornnunet)"
        )
    force = kw.get("force_separate_z")
    if force is True:
        raise VoxsegError("plans.json: force_separate_z=true is not supported by voxseg")
    threshold = float(kw.get("separate_z_anisotropy_threshold", 3.0))
    return ResamplingPlan(
        order_image=order,
        order_z_image=order_z,
        anisotropy_threshold=math.inf if force is False else threshold,
    )


def _topology(arch: dict[str, Any], dims: int) -> Topology:
    """The U-Net layout of ``arch_kwargs`` (informational: the network is built from
    ``arch_kwargs`` itself); a one-stage placeholder for non-U-Net architectures."""
    kw = arch.get("arch_kwargs", {})
    convs = kw.get("n_conv_per_stage", kw.get("n_blocks_per_stage"))
    try:
        n = int(kw["n_stages"])
        as_list = [convs] * n if isinstance(convs, int) else list(convs)
        dec = kw["n_conv_per_stage_decoder"]
        return Topology(
            spatial_dims=dims,
            features_per_stage=list(kw["features_per_stage"]),
            kernel_sizes=[list(k) for k in kw["kernel_sizes"]],
            strides=[list(s) for s in kw["strides"]],
            n_conv_per_stage=as_list,
            n_conv_per_stage_decoder=[dec] * (n - 1) if isinstance(dec, int) else list(dec),
        )
    except (KeyError, TypeError, ValueError):
        return Topology(
            spatial_dims=dims,
            features_per_stage=[1],
            kernel_sizes=[[1] * dims],
            strides=[[1] * dims],
            n_conv_per_stage=[1],
            n_conv_per_stage_decoder=[],
        )


def convert_plans(
    plans: dict[str, Any],
    dataset: dict[str, Any],
    configuration: str,
    mirror_axes: list[int] | None = None,
) -> Plans:
    """voxseg :class:`Plans` with the one ``configuration`` of nnU-Net's ``plans.json``
    (axes in nnU-Net's transposed order; see the module docstring)."""
    config = resolve_configuration(plans, configuration)
    if config.get("previous_stage"):
        raise VoxsegError(
            f"plans.json: configuration {configuration!r} is a cascade stage (it needs the "
            f"prediction of {config['previous_stage']!r} as input), which voxseg cannot run "
            "from an nnU-Net model folder"
        )
    channel_names = dataset.get("channel_names") or dataset.get("modality") or {}
    dims = len(config["patch_size"])
    arch = config["architecture"]
    plan = ConfigurationPlan(
        name=configuration,
        spatial_dims=dims,
        spacing=[float(s) for s in config["spacing"]],
        median_shape=[int(s) for s in config.get("median_image_size_in_voxels", [])],
        patch_size=[int(p) for p in config["patch_size"]],
        batch_size=int(config.get("batch_size", 2)),
        network=arch["network_class_name"],
        topology=_topology(arch, dims),
        resampling=_resampling(config),
        data_from=configuration,
        mirror_axes=mirror_axes,
        explanations={
            "source": "converted from nnU-Net plans.json",
            "transpose_forward": str(plans.get("transpose_forward", [0, 1, 2])),
        },
    )
    return Plans(
        plan_name=plans.get("plans_name", "nnUNetPlans"),
        dataset=plans.get("dataset_name", dataset.get("name") or "nnunet"),
        channel_names=channel_names,
        labels=dataset["labels"],
        num_cases=int(dataset.get("numTraining", 0)),
        original_median_spacing=list(plans.get("original_median_spacing_after_transp", [])),
        original_median_shape=[int(s) for s in plans.get("original_median_shape_after_transp", [])],
        use_mask_for_norm=any(config.get("use_mask_for_norm") or []),
        normalization=_normalization(plans, config, channel_names),
        configurations={configuration: plan},
        explanations={"source": "nnU-Net v2 plans.json, converted by voxseg.inference.nnunet"},
    )


# ------------------------------------------------------------------------------ network


def _trusted_prefixes() -> tuple[str, ...]:
    extra = os.environ.get("VOXSEG_TRUSTED_NETWORK_MODULES", "")
    return TRUSTED_MODULES + tuple(p.strip() for p in extra.split(",") if p.strip())


def locate(dotted: str, *, network: bool = False) -> Any:
    """Import the class ``package.module.Name`` from a trusted module (see the module
    docstring). Without ``voxseg --trust-code`` only classes defined in a trusted module are
    returned (no function, no walk through another module's attributes such as
    ``torch.nn.functional.torch.load``); a ``network`` must be an ``nn.Module`` subclass."""
    trusted = code_trusted()
    prefixes = _trusted_prefixes()
    if network:  # building blocks may come from torch.nn, whole networks may not
        prefixes = tuple(p for p in prefixes if p != "torch.nn.")
    what = "network_class_name" if network else "_kw_requires_import entry"
    if not trusted and not (dotted + ".").startswith(prefixes):
        raise VoxsegError(
            f"plans.json {what} {dotted!r} is outside the trusted modules "
            f"({', '.join(prefixes)}); add its module prefix to VOXSEG_TRUSTED_NETWORK_MODULES "
            "or rerun with 'voxseg --trust-code ...' if you trust this model folder"
        )
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if not trusted:
            defined_in = f"{getattr(obj, '__module__', '')}."
            is_class = inspect.isclass(obj) and defined_in.startswith(prefixes)
            if not is_class or (network and not issubclass(obj, torch.nn.Module)):
                raise VoxsegError(
                    f"plans.json {what} {dotted!r} is not a "
                    f"{'network' if network else ''} class defined in the trusted modules; "
                    "rerun with 'voxseg --trust-code ...' if you trust this model folder"
                )
        return obj
    raise VoxsegError(f"plans.json names {dotted!r}, which cannot be imported")


def build_nnunet_network(
    architecture: dict[str, Any], in_channels: int, num_outputs: int
) -> torch.nn.Module:
    """The network of a plans ``architecture`` entry (nnU-Net's ``get_network_from_plans``
    with deep supervision off; weights are loaded afterwards, so no initialisation)."""
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = locate(kwargs[key])
    kwargs["deep_supervision"] = False
    cls = locate(architecture["network_class_name"], network=True)
    return cls(input_channels=in_channels, num_classes=num_outputs, **kwargs)


def _numpy_safe_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core
    out: list[Any] = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def load_nnunet_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An nnU-Net ``checkpoint_*.pth`` read with ``weights_only=True`` (NumPy scalars in its
    training log allowed; nothing that runs code)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure is the file's fault
        raise VoxsegError(
            f"{path}: cannot be read as a weights-only nnU-Net checkpoint "
            f"({str(exc).splitlines()[0][:200]})"
        ) from exc
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise VoxsegError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    return ckpt


def _clean_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for k, v in weights.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


# ------------------------------------------------------------------------------ axes


def permute_axes(image: Image, order: list[int]) -> Image:
    """``image`` with its spatial axes in ``order`` (array, spacing and direction columns
    together, so every voxel keeps its physical position)."""
    order = [int(a) for a in order]
    arr = image.array
    axes = order if arr.ndim == 3 else [0, *(a + 1 for a in order)]
    return Image(
        np.transpose(arr, axes),
        tuple(image.spacing[a] for a in order),
        image.origin,
        image.direction[:, order],
    )


def _inverse(order: list[int]) -> list[int]:
    return [int(i) for i in np.argsort(order)]


# ------------------------------------------------------------------------------ folder


@dataclass
class NnUNetModelFolder(ModelFolder):
    """An nnU-Net v2 model folder with the :class:`ModelFolder` interface.

    >>> model = NnUNetModelFolder.load("nnUNet_results/Dataset004_Hippocampus/"
    ...                                "nnUNetTrainer__nnUNetPlans__3d_fullres", folds=["0"])
    >>> Predictor(model).predict(read_image("hippocampus_001_0000.nii.gz"))
    """

    architecture: dict[str, Any] = field(default_factory=dict)
    transpose_forward: list[int] = field(default_factory=lambda: [0, 1, 2])
    orientation: str | None = None
    trainer: str = ""
    _weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    KIND: ClassVar[str] = "an nnU-Net model folder"
    REQUIRED: ClassVar[tuple[str, ...]] = (PLANS, DATASET)
    WEIGHTS: ClassVar[dict[str, str]] = CHECKPOINT_FILES

    @classmethod
    def from_layout(
        cls, layout: ModelLayout, folds: list[str], weights_file: str, checkpoint: str
    ) -> NnUNetModelFolder:
        """An nnU-Net v2 results folder: plans, dataset.json and ``checkpoint_*.pth`` files."""
        folder, chosen, file = layout.root, folds, weights_file
        plans = read_json(layout.plans)
        dataset = dict(read_json(layout.dataset))
        if "channel_names" not in dataset and "modality" in dataset:
            dataset["channel_names"] = dataset["modality"]
        dataset.setdefault("numTraining", 0)
        ckpt = load_nnunet_checkpoint(layout.fold_dir(chosen[0]) / file)
        parts = folder.name.split("__")
        configuration = (ckpt.get("init_args") or {}).get("configuration") or (
            parts[2] if len(parts) == 3 else None
        )
        if configuration is None:
            raise VoxsegError(
                f"{folder}: cannot tell the configuration (the checkpoint has no "
                "init_args.configuration and the folder is not Trainer__Plans__configuration)"
            )
        mirror = ckpt.get("inference_allowed_mirroring_axes")
        mirror_axes = None if mirror is None else [int(a) for a in mirror]
        vox_plans = convert_plans(plans, dataset, configuration, mirror_axes)
        reader = dataset.get("overwrite_image_reader_writer") or plans.get(
            "image_reader_writer", "SimpleITKIO"
        )
        if reader not in _READERS:
            raise VoxsegError(
                f"{folder}: the model was trained with image reader {reader!r}; voxseg knows "
                f"the array layout of {', '.join(_READERS)}"
            )
        forward = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
        backward = plans.get("transpose_backward")
        if sorted(forward) != [0, 1, 2] or (
            backward is not None and list(backward) != _inverse(forward)
        ):
            raise VoxsegError(
                f"{layout.plans}: transpose_forward {forward} / transpose_backward "
                f"{backward} are not a permutation and its inverse"
            )
        trainer = str(ckpt.get("trainer_name") or (parts[0] if len(parts) == 3 else ""))
        architecture = resolve_configuration(plans, configuration)["architecture"]
        config = ModelConfig(
            dataset=vox_plans.dataset,
            plan=vox_plans.plan_name,
            configuration=configuration,
            model_name=folder.name,
            network=NetworkConfig(name=architecture["network_class_name"]),
        )
        return cls(
            folder=folder,
            config=config,
            plans=vox_plans,
            info=DatasetInfo.model_validate(dataset),
            folds=chosen,
            checkpoint=checkpoint,
            architecture=architecture,
            transpose_forward=forward,
            orientation=_READERS[reader],
            trainer=trainer,
            _weights={chosen[0]: ckpt["network_weights"]},
        )

    def to_model_space(self, image: Image, roi: Any) -> tuple[Image, Any, Any]:
        """Reorient (``NibabelIOWithReorient`` only) and transpose as nnU-Net does before
        preprocessing; ``restore`` undoes both and gives the prediction the input geometry."""
        from voxseg.spatial.orientation import reorient

        identity = self.transpose_forward == [0, 1, 2]
        if identity and self.orientation is None:
            return image, roi, lambda prediction: prediction
        original = image.geometry
        reorientation = None
        if self.orientation is not None:
            image, reorientation = reorient(image, self.orientation)
        model_image = permute_axes(image, self.transpose_forward)
        if roi is not None:
            arr = np.asarray(roi.array if isinstance(roi, Image) else roi).reshape(original.shape)
            if reorientation is not None:
                arr = reorientation.apply(arr)
            roi = np.transpose(arr, self.transpose_forward)
        backward = _inverse(self.transpose_forward)

        def back(array: np.ndarray) -> Image:
            axes = backward if array.ndim == 3 else [0, *(a + 1 for a in backward)]
            array = np.transpose(array, axes)
            if reorientation is not None:
                array = reorientation.invert(array)
            return Image.from_geometry(np.ascontiguousarray(array), original)

        def restore(prediction: Any) -> Any:
            probs = prediction.probabilities
            return dataclasses.replace(
                prediction,
                segmentation=back(prediction.segmentation.array),
                probabilities=None if probs is None else back(probs.array),
            )

        return model_image, roi, restore

    def build_network(self) -> torch.nn.Module:
        return build_nnunet_network(self.architecture, self.in_channels, self.num_outputs)

    def load_networks(self, device: torch.device) -> list[torch.nn.Module]:
        """One network per fold with its ``network_weights``, in eval mode on ``device``."""
        nets = []
        for fold in self.folds:
            path = ModelLayout(self.folder).fold_dir(fold) / CHECKPOINT_FILES[self.checkpoint]
            weights = self._weights.pop(fold, None)
            if weights is None:
                weights = load_nnunet_checkpoint(path)["network_weights"]
            net = self.build_network()
            try:
                net.load_state_dict(_clean_state_dict(weights))
            except RuntimeError as exc:
                raise VoxsegError(
                    f"{path}: the weights do not fit the network of plans.json "
                    f"({str(exc).splitlines()[0]}); trainers that change the architecture in "
                    "code (not in plans.json) are not supported"
                ) from exc
            nets.append(net.to(device).eval())
        return nets
