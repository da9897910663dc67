"""Download and prepare a TFDS dataset ahead of training (``tfds build`` without apache-beam).

Run from the repository root::

    python trainers/prepare_data.py --dataset=cifar10 --data_dir=DIR

then train anywhere with ``--data_dir=DIR`` (a copy of DIR works too). Same checks and messages
as a training run (``trainers/tfds_prepare.py``); exit status 1 when it cannot be prepared.
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # python trainers/prepare_data.py
    import checkout  # trainers/checkout.py, this script's sibling.

    checkout.require_own_checkout(__file__)

from trainers import console  # noqa: E402

console.start_tensorflow()  # Its C++ errors only, unless TF_CPP_MIN_LOG_LEVEL says otherwise.

from trainers import data, sources, tfds_prepare  # noqa: E402


def run(argv: list[str]) -> int:
    """Parses ``argv`` (without the program name), prepares the dataset; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(sources.TFDS_NAMES))
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    args = parser.parse_args(argv)
    try:
        data.prepare(data.DataConfig(args.dataset, data_dir=args.data_dir))
    except tfds_prepare.DatasetUnavailableError as error:
        print(f"Error ({type(error).__name__}): {error}", file=sys.stderr, flush=True)
        return 1
    where = args.data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    print(f"Dataset {args.dataset} is prepared in {where}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
