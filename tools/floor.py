"""The floor of a train.py run: the same command line, planning and image loading (protocol, masks,
--cache, workers), then only the backbone's forward pass on every batch; no statistics, scoring,
metrics or files. No implementation of the method can be faster, so a run's time over its floor's
is what the method itself costs.

    python tools/floor.py --dataset mvtecad --dataroot ROOT --category carpet --model resnet18 --weights random
    python train.py       --dataset mvtecad --dataroot ROOT --category carpet --model resnet18 --weights random

Prints {"images": N}: the images it ran through the backbone.
"""
from __future__ import annotations

import json
import tempfile

import _root  # noqa: F401
import torch

import train
from common import run_cli
from pipeline.category import build_model
from pipeline.plan import segments_of


def main(argv: list[str] | None = None) -> int:
    args = train.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        args.experiment, args.overwrite = scratch, True  # nothing is written; no earlier result can refuse it
        options, plans, data, device, rank, world = train.planned_run(args)
        extractors: dict = {}
        images = 0
        with torch.inference_mode():
            for plan in plans:
                model = build_model(options, plan, device, extractors)
                for _ in segments_of(plan, rank, world):
                    for batch in data.next_segment():
                        for _ in model.features_of([batch.image]):  # a tiled model's: the batch's tiles
                            pass
                        images += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    print(json.dumps({"images": images}))
    return 0


if __name__ == "__main__":
    run_cli(main)
