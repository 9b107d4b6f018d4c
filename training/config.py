"""Configuration of the `train-dcgan` stage: the paper's settings are the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wikifaces.core.identity import execution_only

POLICIES = ("color", "translation", "cutout")  # DiffAugment's, in the order they are applied


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> its parts, checked."""
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in parts if p not in POLICIES]
    if unknown or not parts:
        raise ValueError(f"augmentation policy {policy!r}: use a comma-separated subset of {', '.join(POLICIES)}")
    return parts


class TrainConfig(BaseModel):
    """DCGAN as Radford, Metz and Chintala (2015) specify it; every field is recorded in the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Path | None = Field(default=None, description="A published shard dataset (folder with manifest.json); "
                                 "in a build, the published dataset of the publish stage.")
    image_size: Literal[32, 64, 128] = 64
    channels: Literal[1, 3] = 3
    z_dim: Annotated[int, Field(ge=1, le=1024)] = 100
    # Channels at the 4x4 layer; halved at each doubling of resolution. The paper: 1024.
    g_width: Annotated[int, Field(ge=8)] = 1024
    d_width: Annotated[int, Field(ge=8)] = 1024
    # 4x4 kernels (stride 2, padding 1) double or halve sizes exactly, as in pytorch/examples;
    # the authors' TensorFlow code used 5x5 ("SAME" padding), available here as 5.
    kernel: Literal[4, 5] = 4
    lr: Annotated[float, Field(gt=0)] = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    batch_size: Annotated[int, Field(ge=2)] = 128
    epochs: Annotated[int, Field(ge=1)] = 5
    max_steps: Annotated[int | None, Field(ge=1)] = None
    flip: bool = True
    # DiffAugment (Zhao et al. 2020) on every image D sees, real or generated, in both updates.
    # auto: on for datasets under `augment_below` images, where D otherwise memorises the few
    # real images and wins (bench/train_quality.py); none: the paper's recipe, bit for bit.
    augment: Literal["auto", "none", "diffaug"] = "auto"
    augment_policy: str = "color,translation,cutout"
    augment_below: Annotated[int, Field(ge=0)] = 20_000
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on a GPU, fp32 on the CPU
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    data: Literal["auto", "memory", "stream"] = "auto"
    max_memory_gb: Annotated[float, Field(gt=0)] = 8.0  # decode into one tensor when it fits in this
    workers: Annotated[int, Field(ge=0)] = execution_only(2)  # DataLoader workers when streaming
    sample_every: Annotated[int, Field(ge=1)] = 500
    checkpoint_every: Annotated[int, Field(ge=1)] = 1000
    fixed_samples: Annotated[int, Field(ge=1, le=1024)] = 64
    # sample quality (face rate, Fréchet distance, precision/recall in an offline descriptor space)
    # every `quality_every` steps and at the end, on `quality_samples` samples; needs a judge
    # (the build gives face datasets one); None: only at the end
    quality_every: Annotated[int | None, Field(ge=1)] = None
    # auto: the face judge for datasets the faces build published, none otherwise (no registry
    # package ships a general image model); faces: always; none: never
    quality: Literal["auto", "faces", "none"] = "auto"
    quality_samples: Annotated[int, Field(ge=8, le=10_000)] = 256
    runs_dir: Path | None = execution_only(None)  # default: <data root>/runs
    # continue this run directory exactly (default: the run a crash interrupted, if any): an exact
    # resume ends with the weights of an uninterrupted run, so it is not part of the results hash
    resume: Path | None = execution_only(None)
    desc: str = Field(default="dcgan", pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("augment_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        return ",".join(parse_policy(v))

    @model_validator(mode="after")
    def _sizes(self) -> TrainConfig:
        blocks = {32: 3, 64: 4, 128: 5}[self.image_size]
        for name in ("g_width", "d_width"):
            if getattr(self, name) >> (blocks - 1) < 1:
                raise ValueError(f"{name} {getattr(self, name)} is too small for {self.image_size}px: "
                                 f"it is halved {blocks - 1} times")
        return self
