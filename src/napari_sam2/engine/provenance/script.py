"""A provenance record as a runnable Python script for the public API ("copy as Python")."""

from __future__ import annotations

from .record import ProvenanceRecord


def python_script(record: ProvenanceRecord, out: str | None = None) -> str:
    """A runnable Python script that makes the record's labels again through the public API.

    The script takes the output path as its first argument (default ``out``, else
    ``labels_replay.tif``). For images that were in memory (no path) it stops with a message
    asking for one; for a model of unknown source likewise.

    Raises:
        ProvenanceError: a record of an unknown kind.
    """
    img, mdl = record.image, record.model
    func, kwargs = record.api_call()
    with_prompts = record.kind != "auto"
    names = f"Prompt, load_model, {func}" if with_prompts else f"load_model, {func}"
    lines = [
        f'"""Makes the labels of a napari-sam2 {record.kind} run again '
        f'(napari-sam2 {record.runtime.get("napari_sam2")}, model {mdl.get("name")})."""',
        "",
        "import sys",
        "",
        "import torch",
        "",
        f"from napari_sam2 import {names}",
        "",
        f"torch.set_num_threads({int(record.runtime.get('threads') or 1)})  # the thread count of the original run",
        f"IMAGE = {img.get('path')!r}",
        f"MODEL = {mdl.get('source')!r}  # sha256 {mdl.get('sha256')}",
        f"OUT = sys.argv[1] if len(sys.argv) > 1 else {out or 'labels_replay.tif'!r}",
        "if IMAGE is None:",
        "    sys.exit('the image was in memory when these labels were made: set IMAGE to its file')",
        "if MODEL is None:",
        "    sys.exit('the model is not known by name or file: set MODEL to its checkpoint')",
        "",
        f"model = load_model(MODEL, device={record.runtime.get('device', 'cpu')!r})",
    ]
    if with_prompts:
        lines.append("prompts = {")
        for e in record.prompts:
            args = []
            if e["points"]:
                args += [f"points={e['points']!r}", f"labels={e['labels']!r}"]
            if e["box"] is not None:
                args.append(f"box={tuple(e['box'])!r}")
            lines.append(f"    {(*e['frame'], e['obj_id'])!r}: Prompt({', '.join(args)}),")
        lines.append("}  # (frame indices..., object id): clicks (row, col), 1 = positive")
    lines.append(f"result = {func}(")
    lines.append("    IMAGE,")
    if with_prompts:
        lines.append("    prompts,")
    lines.append("    model=model,")
    lines += [f"    {k}={v!r}," for k, v in kwargs.items()]
    lines.append(")")
    lines.append("result.save(OUT)")
    lines.append("print('wrote', OUT)")
    return "\n".join(lines) + "\n"
