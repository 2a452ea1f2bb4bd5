"""Write synthetic categories in MVTec AD's layout: python tools/make_synthetic.py --category all."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _root  # noqa: F401

from common import UserError, run_cli
from datasets import synthetic


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other bad input
        raise UserError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(description="Generate seeded synthetic anomaly-segmentation categories in MVTec AD's "
                            f"layout. Categories: {', '.join(synthetic.CATEGORIES)}.")
    p.add_argument("--root", type=Path, default=None,
                   help="output folder (default: $SEMIORTHO_SYNTHETIC or ~/.cache/semiortho/synthetic)")
    p.add_argument("--category", default="all", help="a name, a comma-separated list, or 'all' (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None,
                   help="square side in pixels (default: the category's, 256; sheet 1024)")
    p.add_argument("--n-train", type=int, default=60, help="normal training images (default 60)")
    p.add_argument("--n-test-good", type=int, default=10, help="normal test images (default 10)")
    p.add_argument("--n-test-defect", type=int, default=20,
                   help="defective test images in all, spread over the defect types (default 20)")
    color = p.add_mutually_exclusive_group()
    color.add_argument("--grayscale", dest="grayscale", action="store_true", default=None,
                       help="write single-channel images (default: per category)")
    color.add_argument("--color", dest="grayscale", action="store_false", help="write RGB images")
    return p


def _categories(text: str) -> list[str]:
    if text.strip() == "all":
        return list(synthetic.CATEGORIES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--category is empty; give a name, a comma-separated list, or 'all'")
    unknown = [n for n in names if n not in synthetic.CATEGORIES]
    if unknown:
        raise UserError(f"unknown synthetic category {unknown[0]!r}; known: {', '.join(synthetic.CATEGORIES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = args.root if args.root is not None else synthetic.default_root()
    for name in _categories(args.category):
        start = time.perf_counter()
        path = synthetic.generate_category(
            root, name, seed=args.seed, image_size=args.image_size, n_train=args.n_train,
            n_test_good=args.n_test_good, n_test_defect=args.n_test_defect, grayscale=args.grayscale)
        _report(path, time.perf_counter() - start)
    return 0


def _report(path: Path, seconds: float) -> None:
    counts = {d.name: len(list(d.glob("*.png"))) for d in sorted((path / "test").iterdir())}
    n_train = len(list((path / "train" / "good").glob("*.png")))
    params = json.loads((path / "synthetic.json").read_text())
    tests = ", ".join(f"{k} {v}" for k, v in counts.items())
    mode = "grayscale" if params["grayscale"] else "RGB"
    print(f"wrote {path}: train {n_train}, test {tests}; {params['image_size']} px {mode}, "
          f"seed {params['seed']}, {seconds:.1f} s")


if __name__ == "__main__":
    run_cli(main)
