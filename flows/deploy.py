"""Deployments for every flow, served by one process (`wikifaces serve`).

Why `serve()` rather than a `prefect.yaml` with a process work pool: one command, no pool or
worker to create, and the deployments' code is the installed package itself. A GPU machine runs
`wikifaces serve --only train-dcgan` against the same Prefect server, and a build started
elsewhere with `train_deployment="train-dcgan/default"` trains there.
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from dedup.config import LsunImportConfig
from scraping.config import NamesConfig

from . import ALL_FLOWS
from .build import STANDIN_NAMES

# The offline demo: the stand-in Wikipedia, a small CPU training run.
DEMO_PARAMETERS: dict[str, Any] = {
    "names": STANDIN_NAMES.model_dump(mode="json"),
    "standin": True,
    # ~30 faces (the identity check turns away other people's and group photos' faces; verified dedup
    # removes the stand-in's re-cropped copies of one photograph). 64 px faces
    # need ~1,000 steps of batch 64 with DiffAugment (bench/train_quality.py: minutes of CPU, not the
    # demo's half minute), so the demo trains at 32 px with 64 channels, where the paper's recipe gives
    # faces in 1,500 steps (face rate 0.34 of 128 samples; DiffAugment, slower to converge, 0.10 at that
    # budget: the README's training section). The paper's settings are the `default` deployment's.
    "train": {"image_size": 32, "g_width": 64, "d_width": 64, "batch_size": 16, "max_steps": 1500,
              "augment": "none", "sample_every": 150, "checkpoint_every": 250, "quality_samples": 128,
              "desc": "demo"},
}
# Every human on Wikidata born since 1900 with a picture, from the Query Service (give a contact:
# --params '{"names": {..., "http": {"contact": "you@example.org"}}}'); the paper's "modern era".
WIKIDATA_PARAMETERS: dict[str, Any] = {
    "names": NamesConfig(source="wikidata-sparql", born_after=1900, has_image=True).model_dump(mode="json"),
}
LSUN_PARAMETERS: dict[str, Any] = {
    "lsun": LsunImportConfig(source="data/lsun/bedroom_train_lmdb").model_dump(mode="json"),
}


def deployments(only: list[str] | None = None) -> list[Any]:
    out = []
    for name, fl in ALL_FLOWS.items():
        if only and name not in only:
            continue
        params = LSUN_PARAMETERS if name == "build-lsun" else {}
        out.append(fl.to_deployment(name="default", parameters=params, tags=["wikifaces"]))
        if name == "build-faces":
            out.append(fl.to_deployment(name="demo", parameters=DEMO_PARAMETERS, tags=["wikifaces", "offline"]))
            out.append(fl.to_deployment(name="wikidata", parameters=WIKIDATA_PARAMETERS, tags=["wikifaces"]))
    return out


def serve_all(only: list[str] | None = None, limit: int | None = None) -> None:
    serve(*deployments(only), limit=limit)
