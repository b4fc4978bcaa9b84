"""Command line: ``photostyle transfer | segment | bench | batch | serve | weights | apply-lut``.

Heavy imports (torch and the models) happen inside the commands, so
``--help`` and ``--version`` answer at once. Every deliberate error becomes one
line on stderr and the exit code of its class (see :mod:`photostyle.errors`);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, Interrupted, PhotostyleError
from .settings import PRESETS, Setting, TransferConfig, from_preset, setting_of


#: What ``photostyle weights --fetch`` knows; the registry's names are repeated here so ``--help`` needs no torch.
FETCHABLE = ("vgg16-imagenet", "lpips-vgg-heads", "vgg19-imagenet", "wordnet", "ade20k")


def _bounded(kind: type, minimum: float, maximum: float | None = None) -> Any:
    """An argparse type for options that are not transfer settings (``--save-every``, ``--limit``, ...)."""
    return _parser_of(Setting("", kind=kind, minimum=minimum, maximum=maximum))


def _parser_of(setting: Setting):
    """An argparse type that reads a value of ``setting.kind`` and checks it against ``setting``."""

    def parse(text: str) -> int | float | str:
        try:
            value = setting.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {setting.describe()} but received {text!r}") from None
        try:
            setting.check("value", value)
        except InputError:
            raise argparse.ArgumentTypeError(f"expected {setting.describe()} but received {text}") from None
        return value

    parse.__name__ = setting.describe()  # argparse names the type in some messages
    return parse


#: Settings whose default comes from ``--preset``.
_PRESET_FIELDS = tuple(dict.fromkeys(name for preset in PRESETS.values() for name in preset))
_PRESET_FLAGS = [setting_of(name).flags[0] for name in _PRESET_FIELDS]


def _add_settings(group: argparse._ArgumentGroup, names: Iterable[str] | None = None) -> None:
    """One option per :class:`~photostyle.settings.TransferConfig` field that has flags (``names``: only these).

    Choices, bounds, defaults and help come from the field's :class:`~photostyle.settings.Setting`; every
    option defaults to ``None`` so that the preset's or the config's own default applies.
    """
    defaults = TransferConfig()
    for f in fields(TransferConfig):
        setting = setting_of(f)
        if not setting.flags or (names is not None and f.name not in names):
            continue
        default = "from --preset" if f.name in _PRESET_FIELDS else getattr(defaults, f.name)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f"{setting.help} (default: {default})"}
        if setting.choices:
            kwargs["choices"] = setting.choices
        elif setting.kind is not str:
            kwargs["type"] = _parser_of(setting)
            kwargs["metavar"] = "N"
        group.add_argument(*setting.flags, **kwargs)


def _add_transfer_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a transfer (transfer, bench, batch), from the settings."""
    g = p.add_argument_group("transfer settings")
    g.add_argument("--preset", choices=list(PRESETS), default="balanced",
                   help=f"speed/quality: sets {', '.join(_PRESET_FLAGS[:-1])} and {_PRESET_FLAGS[-1]} unless given "
                        "(default %(default)s)")
    _add_settings(g)


def config_from_args(args: argparse.Namespace) -> TransferConfig:
    """Build a :class:`~photostyle.settings.TransferConfig` from parsed options (``--weights none``: random)."""
    values = {f.name: getattr(args, f.name) for f in fields(TransferConfig) if getattr(args, f.name, None) is not None}
    if values.get("weights") == "none":
        values["weights"] = None
    return from_preset(getattr(args, "preset", "balanced"), **values)


def _cmd_transfer(args: argparse.Namespace) -> int:
    from .pipeline import transfer
    from .progress import ProgressCallback

    config = config_from_args(args)
    output = Path(args.output)
    progress = ProgressCallback(config.total_steps, quiet=args.quiet, save_every=args.save_every, output=output,
                                overwrite=args.overwrite or args.resume)
    with progress:
        result = transfer(
            args.content, args.style, output, config,
            content_mask=args.content_mask, style_mask=args.style_mask,
            overwrite=args.overwrite, callback=progress, keep_state=args.save_every, resume=args.resume,
            report_path=args.report, lut_path=args.lut, lut_size=args.lut_size, hald_path=args.hald,
            intermediate_paths=progress.existing_files(),
        )
    if not args.quiet:
        for note in result.segmentation.mask_notes:
            print(f"photostyle: note: {note}", file=sys.stderr)
        for part in result.segmentation.pairing:
            print(f"photostyle: part: {part['text']}", file=sys.stderr)
        if result.look is not None:
            look = result.look
            written = " and ".join(p for p in (look.cube, look.hald) if p)
            print(f"photostyle: wrote the look as {written}: it reproduces the result to CIEDE2000 "
                  f"{look.ciede2000_mean:.2f} on average, {look.ciede2000_p95:.2f} at the 95th percentile "
                  f"({look.note})", file=sys.stderr)
        height, width = result.image.shape[-2:]
        print(f"wrote {output} ({width}x{height}) in {result.total_seconds:.1f} s", file=sys.stderr)
    if result.interrupted:
        hint = "; add --resume to the same command to continue" if result.resume_state else ""
        raise Interrupted(f"interrupted after {result.steps} steps; the best result so far was written to {output}{hint}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import parse_scores, run_benchmark

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr)

    if args.speed:
        from .bench.speed import DEFAULT_MEGAPIXELS, parse_megapixels, run_speed

        sizes = parse_megapixels(args.megapixels) if args.megapixels else DEFAULT_MEGAPIXELS
        record = run_speed(args.out, config_from_args(args), sizes, progress=say)
        failed = sum("error" in r for r in record["runs"])
        say(f"wrote {Path(args.out) / 'speed.md'}, speed.json and speed.svg ({len(record['runs'])} runs, {failed} failed) "
            f"on {record['machine']}")
        return 1 if failed else 0
    if not args.pairs:
        raise InputError("bench needs --pairs DIR (or --speed, which needs no data)")

    report = run_benchmark(
        args.pairs, args.out, config_from_args(args),
        ids=[i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None,
        limit=args.limit, masks=args.masks, scores=parse_scores(args.score), run=not args.no_run,
        eval_size=args.eval_size, eval_weights=None if args.eval_weights == "none" else args.eval_weights,
        progress=say,
    )
    failed = sum("error" in r for r in report["pairs"])
    say(f"wrote {Path(args.out) / 'report.md'} ({len(report['pairs'])} pairs, {failed} failed) in {report['seconds']:.0f} s")
    if report["interrupted"]:
        raise Interrupted(f"interrupted; the report covers the pairs done so far in {args.out}")
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import jobs_from_csv, jobs_from_folder, run_batch
    from .errors import InputError

    if args.pairs and not (args.input or args.style):
        jobs = jobs_from_csv(args.pairs, args.output, args.format)
    elif args.input and args.style and not args.pairs:
        jobs = jobs_from_folder(args.input, args.style, args.output, args.format)
    else:
        raise InputError("give --input DIR and --style PHOTO, or --pairs CSV (not both)")
    summary = run_batch(jobs, config_from_args(args), overwrite=args.overwrite, progress=not args.quiet)
    for line in summary.failure_lines():
        print(f"failed: {line}", file=sys.stderr)
    print(f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed "
          f"in {summary.seconds:.0f} s; outputs in {args.output}", file=sys.stderr)
    if summary.interrupted:
        raise Interrupted("interrupted; finished outputs are kept and the next run skips them")
    return summary.exit_code


def _cmd_apply_lut(args: argparse.Namespace) -> int:
    from .errors import InputError, OutputError
    from .io import check_distinct, check_output_path, load_image, output_bit_depth, save_image
    from .lut import read_lut

    out = Path(args.output)
    images = [Path(p) for p in args.images]
    folder = len(images) > 1 or out.is_dir()
    if folder and out.exists() and not out.is_dir():
        raise OutputError(f"-o {out} is a file; give a folder for {len(images)} photos")
    outputs = [out / (p.stem + (p.suffix if args.format == "same" else f".{args.format}")) for p in images] if folder else [out]
    if len(set(outputs)) < len(outputs):
        raise InputError("two photos have the same name, so their outputs would collide; apply the LUT to them separately")
    check_distinct({f"the output {o}": o for o in outputs}, [args.lut, *images])
    look = read_lut(args.lut)
    if folder:
        out.mkdir(parents=True, exist_ok=True)
    for target in outputs:
        check_output_path(target, overwrite=args.overwrite)
    for source, target in zip(images, outputs):
        photo = load_image(source)
        save_image(look.apply(photo.tensor), target, alpha=photo.alpha, exif=photo.exif, icc_profile=photo.icc_profile,
                   bit_depth=output_bit_depth(target, photo.bit_depth), overwrite=args.overwrite)
    if not args.quiet:
        print(f"photostyle: applied {args.lut} ({look.size}^3) to {len(images)} photo(s): {', '.join(map(str, outputs))}",
              file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .web import access, create_app
    except ImportError as err:
        raise PhotostyleError(f"the web page needs {err.name}; install it with: pip install 'photostyle[web]'") from err
    hosts, token, url = access(args.host, args.port, args.allow_host)
    if token is not None:
        print(f"photostyle: listening on {args.host}: anyone who reaches it and has the address below with its token "
              f"can upload photos; it answers to {', '.join(sorted(hosts))} (more with --allow-host)", file=sys.stderr)
    app = create_app(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, allowed_hosts=hosts, token=token)
    print(f"photostyle: open {url} (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from .errors import OutputError
    from .io import check_distinct, check_writable, load_image, write_atomically
    from .masks import save_colour_mask
    from .segmentation import available_segmenters
    from .segmentation.auto import choose_segmenter, save_overlay, segment_pair
    from .segmentation.names import name_segments

    config = config_from_args(args)
    if len(args.images) > 2:
        raise InputError(f"segment takes one photo or a content and a style photo but received {len(args.images)}")
    if config.segmenter != "auto" and config.segmenter not in available_segmenters():
        raise InputError(f"unknown segmenter {config.segmenter!r}; choose one of: auto, {', '.join(available_segmenters())}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {out} is a file; segment writes several files, give a folder")
    roles = ["image"] if len(args.images) == 1 else ["content", "style"]
    files = [out / f"{role}_{kind}.png" for role in roles for kind in ("mask", "overlay")] + [out / "grouping.json"]
    for f in files:
        check_distinct({"the output": f}, args.images)
    images = [load_image(path).tensor for path in args.images]
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            check_writable(f, overwrite=args.overwrite)
    except (OSError, OutputError) as err:
        if created and out.is_dir():
            out.rmdir()
        raise err if isinstance(err, OutputError) else OutputError(
            f"cannot create the folder {out} ({err.strerror}); choose another -o") from err
    pairing: list[dict] = []
    if len(images) == 1:
        backend, notes = choose_segmenter(config.segmenter, config.vgg16_weights)
        segs, name, grouping = [backend.segment(images[0])], backend.name, None
        if not backend.labelled:
            segs = name_segments(images[0], segs[0])
    else:
        outcome = segment_pair(images[0], images[1], segmenter=config.segmenter, metric=config.similarity_metric,
                               threshold=config.semantic_threshold, min_fraction=config.min_segment,
                               vgg16_weights=config.vgg16_weights)
        segs, notes = [outcome.content, outcome.style], outcome.notes
        name, grouping, pairing = outcome.segmenter, outcome.grouping, outcome.pairing
    summary = {"segmenter": name, "images": {role: {"path": str(path), "labels": seg.labels,
               "coverage": [round(float(c), 4) for c in seg.coverage()]} for role, path, seg in zip(roles, args.images, segs)},
               "grouping": grouping, "pairing": pairing, "notes": notes}
    for role, image, seg in zip(roles, images, segs):
        save_colour_mask(seg, out / f"{role}_mask.png", overwrite=args.overwrite)
        save_overlay(image, seg, out / f"{role}_overlay.png", overwrite=args.overwrite)
    write_atomically(out / "grouping.json", json.dumps(summary, indent=2) + "\n")
    if not args.quiet:
        for part in pairing:
            print(f"photostyle: part: {part['text']}", file=sys.stderr)
        print(f"wrote masks, overlays and grouping.json to {out} ({name}: {', '.join(segs[0].labels)})", file=sys.stderr)
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from . import weights

    if args.fetch:
        for name in args.fetch:
            print(f"{name}: {_fetch(name)}")
        return 0
    for name, available, path, note in weights.status():
        mark = "yes" if available else "no "
        print(f"{mark}  {name:<18} {path or '-'}  {note}")
    return 0


def _fetch(name: str) -> str:
    """Fetch one named download (the only command that opens a network connection); returns where it is."""
    if name == "wordnet":
        from .wordnet import ensure_wordnet

        return str(ensure_wordnet(fetch=True))
    if name == "ade20k":
        from .segmentation.ade20k import DEFAULT_CHECKPOINT, ADE20KSegmenter

        ADE20KSegmenter(local_files_only=False)
        return f"{DEFAULT_CHECKPOINT} in the Hugging Face cache"
    from . import weights

    return str(weights.ensure(name, fetch=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="photostyle", description="Photographic style transfer that stays a photograph.")
    parser.add_argument("--version", action="version", version=f"photostyle {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transfer", help="give CONTENT the look of STYLE")
    p.add_argument("content", help="content photo")
    p.add_argument("style", help="style (reference) photo")
    p.add_argument("-o", "--output", required=True, help="output image (.png .jpg .tif .webp .bmp)")
    p.add_argument("--content-mask", help="DPST colour-coded mask of the content photo")
    p.add_argument("--style-mask", help="DPST colour-coded mask of the style photo")
    p.add_argument("--report", help="write timings, loss terms, settings and weights used to this JSON file "
                   "(checked before the run; an existing file needs --overwrite)")
    p.add_argument("--lut", metavar="LOOK.cube", help="also write the look as a 3D LUT (.cube) for Lightroom, Resolve, "
                   "darktable or ffmpeg: the global colour map that best reproduces the result")
    p.add_argument("--lut-size", type=int, choices=(17, 33, 65), default=33, help="LUT nodes per axis (default %(default)s)")
    p.add_argument("--hald", metavar="LOOK.png", help="also write the look as a Hald CLUT image (level 8, 16-bit PNG)")
    p.add_argument("--save-every", type=_bounded(int, 0), default=0, metavar="N",
                   help="save the working image and the resume state every N steps (the state is always saved on Ctrl-C)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (and --report) file; an input photo or mask is never replaced")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command from OUTPUT.photostyle-state.pt; only then may "
                        "OUTPUT and --report, which that run wrote, be replaced without --overwrite")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_transfer_options(p)
    p.set_defaults(func=_cmd_transfer)

    p = sub.add_parser("bench", help="score photostyle, the paper's results and baselines on a folder of pairs")
    p.add_argument("--pairs", help="folder in DPST layout: input/inN.png, style/tarN.png, "
                   "segmentation/inN.png + tarN.png, final_results/bestN.png (optional); not needed with --speed")
    p.add_argument("--out", required=True, help="output folder: report.json, report.md, photostyle/, sheets/, metrics/")
    p.add_argument("--speed", action="store_true", help="instead: time each preset on synthetic photos of each "
                   "--megapixels size, on --device; writes speed.json, speed.md and speed.svg")
    p.add_argument("--megapixels", metavar="MP,MP,...", help="photo sizes of --speed (default 0.3,2,12,24,50)")
    p.add_argument("--ids", help="comma-separated pair ids, e.g. 1,5,9 (default: all)")
    p.add_argument("--limit", type=_bounded(int, 1), help="run at most N pairs")
    p.add_argument("--masks", choices=["hand", "auto", "none"], default="hand",
                   help="segments photostyle itself uses (default %(default)s); metrics always use the hand masks")
    p.add_argument("--eval-size", type=_bounded(int, 32), default=None,
                   help="long side in px at which all methods are scored (default: each photo's own size, capped at 1024)")
    p.add_argument("--eval-weights", default="default", help="VGG16 weights of the metrics; 'none' = random (smoke tests only)")
    p.add_argument("--score", nargs="+", action="extend", default=[], metavar="NAME=DIR",
                   help="also score another method: DIR holds one image per pair id (N.png, bestN.jpg, inN.png, ...)")
    p.add_argument("--no-run", action="store_true", help="do not run photostyle; score the outputs already in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _add_transfer_options(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("batch", help="style a folder of photos, or the pairs of a CSV; skips finished outputs")
    p.add_argument("--input", help="folder of content photos (.jpg .jpeg .png .tif .tiff .webp .bmp, sorted by name)")
    p.add_argument("--style", help="the style photo for every photo of --input")
    p.add_argument("--pairs", help="CSV of content,style[,output][,content_mask,style_mask] (paths relative to it)")
    p.add_argument("--output", required=True, help="output folder; files are named <content stem>.<format>")
    p.add_argument("--format", choices=["jpg", "png", "tif"], default="jpg",
                   help="output format (default %(default)s, JPEG quality 95; png/tif are lossless and keep alpha)")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_transfer_options(p)
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("apply-lut", help="apply a look (.cube or Hald CLUT) to photos at full resolution")
    p.add_argument("lut", help="a 3D .cube LUT or a Hald CLUT image")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos to recolour")
    p.add_argument("-o", "--output", required=True,
                   help="output image for one photo, or a folder (created if needed) for several: <stem>.<format>")
    p.add_argument("--format", choices=["same", "jpg", "png", "tif"], default="same",
                   help="output format in a folder (default: each photo's own)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs; an input is never replaced")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=_cmd_apply_lut)

    p = sub.add_parser("serve", help="the web page: upload two photos, compare, download")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only; any other needs the token printed at start)")
    p.add_argument("--port", type=int, default=7860, help="default %(default)s")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest photo file accepted (default %(default)s)")
    p.add_argument("--max-pixels", type=float, default=40e6, help="largest photo accepted in pixels (default %(default).0f)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to this host name or address (repeatable); other names are refused")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("segment", help="segment one photo, or a content and style pair, and show the segments")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="one photo, or a content and a style photo")
    p.add_argument("-o", "--output", required=True, help="folder for *_mask.png, *_overlay.png and grouping.json")
    _add_settings(p.add_argument_group("segmentation settings"),
                  ("segmenter", "similarity_metric", "semantic_threshold", "min_segment"))
    p.add_argument("--overwrite", action="store_true", help="replace existing files in the folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("weights", help="list pretrained weights, or fetch them")
    p.add_argument("--fetch", nargs="+", metavar="NAME", choices=FETCHABLE,
                   help=f"download and verify these ({', '.join(FETCHABLE)}); the only command that goes online")
    p.set_defaults(func=_cmd_weights)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, without the source location (``--debug`` shows it)."""
    print(f"photostyle: warning: {message}", file=sys.stderr)


_received_signal = signal.SIGINT


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, ``timeout``, ``docker stop``) stops a run as Ctrl-C does: the best result
    so far and the resume state are kept."""
    global _received_signal
    _received_signal = signal.Signals(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (128 + the signal's number when stopped)."""
    global _received_signal
    _received_signal = signal.SIGINT
    stoppable = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGINT, signal.SIGTERM)} if stoppable else {}
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print(f"photostyle: {'terminated' if _received_signal == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
        return 128 + _received_signal
    except Interrupted as err:
        print(f"photostyle: {'terminated' if _received_signal == signal.SIGTERM else 'error'}: {err}", file=sys.stderr)
        return 128 + _received_signal
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _forget_caught_interrupt()


def _forget_caught_interrupt() -> None:
    """Clear CPython's note that a KeyboardInterrupt went unhandled, once :func:`main` handled it.

    A KeyboardInterrupt raised by :func:`_stop` inside code that ``exec`` or ``eval`` runs from a
    string (``dataclasses`` and ``numpy`` build functions so while ``import torch`` runs) is noted
    by CPython as unhandled although :func:`main` catches it, and ``python -m photostyle.cli`` then
    ends by killing itself with SIGINT (exit status -2) instead of exiting with 130 or 143. Every
    ``exec`` of a string starts by clearing that note, so one more, of nothing, clears it.
    """
    exec("")


def _import_torch_held() -> None:
    """Import torch (and numpy) with SIGINT and SIGTERM held, then let a signal that came meanwhile in.

    A KeyboardInterrupt raised by :func:`_stop` in the middle of torch's own start-up (Python code
    that its C++ calls) can abort the interpreter or leave torch half-imported; held, the signal
    arrives once the import is over and stops the run as anywhere else. Nothing to hold off the main
    thread or without ``pthread_sigmask`` (Windows).
    """
    held = {signal.SIGINT, signal.SIGTERM}
    hold = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if hold:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        import torch  # noqa: F401
    finally:
        if hold:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _import_torch_held()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning
            return args.func(args)
    except Interrupted:
        raise
    except PhotostyleError as err:
        if args.debug:
            raise
        print(f"photostyle: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
