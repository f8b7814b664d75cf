"""``fastdnc analyze``: a user's own trained network through the DNC lens (the factory that builds
it, its checked state dict, a bundled data set or the user's checked ``.npz``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._text import plural


def _factory(spec: str):
    """The callable named by ``MODULE:FACTORY`` (an importable module) or ``path/file.py:FACTORY``."""
    import importlib
    import importlib.util

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model {spec!r}: give MODULE:FACTORY or path/to/file.py:FACTORY")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise FileNotFoundError(f"--model: {path} does not exist")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        if loader is None or loader.loader is None:
            raise ValueError(f"--model: cannot import {path}")
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise ValueError(f"--model {spec!r}: no module {e.name!r} (is it on PYTHONPATH?)") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {module_name} has no callable {attr!r}")
    return factory


def _analysis_data(args: argparse.Namespace):
    import torch

    from ..data import balanced_subsample, load_dataset
    from ..data.npz import load_npz

    if args.data is not None:
        data = load_npz(args.data)
        data = balanced_subsample(data, args.n_per_class, 0) if args.n_per_class else data
    else:
        data = load_dataset(args.dataset, args.data_dir, n_per_class=args.n_per_class)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    x, y = data.inputs.to(getattr(torch, args.dtype)), data.labels
    return data, [
        (x[i : i + args.batch_size], y[i : i + args.batch_size]) for i in range(0, data.num_samples, args.batch_size)
    ]


def cmd_analyze(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import analyze
    from ..safe_read import load_state_dict_checked, read_state_dict

    model = _factory(args.model)()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"--model {args.model}: the factory returned {type(model).__name__}, not an nn.Module")
    if args.weights is not None:
        load_state_dict_checked(model, read_state_dict(args.weights), f"weights file {args.weights}")
    model = model.to(getattr(torch, args.dtype))
    data, batches = _analysis_data(args)
    loss = torch.nn.CrossEntropyLoss() if args.loss == "ce" else torch.nn.MSELoss()
    if args.loss == "mse":
        eye = torch.eye(data.num_classes, dtype=getattr(torch, args.dtype))
        batches = [(x, eye[y]) for x, y in batches]
    res = analyze(
        model,
        batches,
        loss,
        args.layers,
        model_curvature=not args.no_model_curvature,
        density=not args.no_density,
        progress=not args.quiet,
        threads=args.threads,
    )
    res.notes.append(
        f"data: {data.name}, {data.num_samples} samples; weights: {args.weights or 'as built by the factory'}"
    )
    res.save(args.out)
    if not args.quiet:
        for layer in res.layers:
            want = layer.expected.count
            print(
                f"{layer.name}: {plural(layer.outliers, 'outlier')} (expected at DNC: {'—' if want is None else want}), "
                f"f same/cross {layer.f_same:.3f}/{layer.f_cross:.3f}, NC1 of its input {layer.collapse.get('nc1', float('nan')):.3g}"
            )
        print(f"wrote {Path(args.out) / 'report.md'} and analysis.json in {res.seconds:.1f} s")
    return 0
