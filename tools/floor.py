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
from pipeline.plan import segments_of
from pipeline.shared_pass import build_model, shared_features


def main(argv: list[str] | None = None) -> int:
    args = train.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        args.experiment, args.overwrite = scratch, True  # nothing is written; no earlier result can refuse it
        options, passes, data, device, rank, world = train.planned_run(args)
        extractors: dict = {}
        images = 0
        with torch.inference_mode():
            for plans in passes:  # a grid's variants share each batch's forward, once per distinct backbone
                models = [build_model(options, plan, device, extractors) for plan in plans]
                for _ in segments_of(plans[0], rank, world):
                    for batch in data.next_segment():
                        for _ in shared_features(models, batch.image):  # a tiled model's: the batch's tiles
                            pass
                        images += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    print(json.dumps({"images": images}))
    return 0


if __name__ == "__main__":
    run_cli(main)
