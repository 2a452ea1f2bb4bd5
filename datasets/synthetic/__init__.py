"""Seeded synthetic anomaly-segmentation data written in MVTec AD's on-disk layout.

Each category is a procedural texture or an aligned object. Normal images differ by small
nuisances (lighting, sensor noise, texture phase, a pixel or two of object jitter); defective
test images get one defect composited through an alpha map, and the mask written is exactly
`alpha > 0.5` (the soft rim with alpha <= 0.5 is a faint blend outside the mask, like a
hand-drawn MVTec mask that hugs the visible defect).

Every image comes from its own random stream keyed by (seed, category, split, defect, index),
so files are byte-identical across runs (on one machine and library stack: OpenCV's and numpy's
SIMD kernels may differ in the last bit between CPUs), whatever the thread scheduling, and a
defect image can be re-rendered without its defect.

Modules: loader (categories, load, the cache folder, generate_category), render (the category
catalogue, one image), scenes (textures and objects), defects, noise (shared drawing primitives).
"""
from datasets.spec import DatasetSpec
from datasets.synthetic.loader import categories, default_root, ensure_category, generate_category, load
from datasets.synthetic.render import CATEGORIES, VERSION, render_sample

# generated into a cache folder (default_root) when --dataroot is not given
DATASET = DatasetSpec(name="synthetic", title="Synthetic", categories=categories, load=load, needs_root=False,
                      order=9)

__all__ = ["CATEGORIES", "DATASET", "VERSION", "categories", "default_root", "ensure_category", "generate_category",
           "load", "render_sample"]
