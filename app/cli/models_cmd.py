"""`memory-r1 models list|download|import|remove|use|optimize`: the model manager on the command line.

Registration imports nothing heavy; the core model manager is imported inside the commands.
With --json each command prints one JSON document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from core.errors import Cancelled, InvalidInputError
from app.cli.options import add_command


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list, download, import and remove models",
                              description="Manage the GGUF models the assistant can use.")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True

    ls = _command(sub, "list", cmd_list, "installed models, then the catalog, with a fit estimate")
    ls.add_argument("--ctx", type=int, default=None, help="context size for the fit estimate")

    dl = _command(sub, "download", cmd_download, "download a catalog model (resumes a paused download)")
    dl.add_argument("model", help="catalog id (see `models list`)")
    dl.add_argument("--discard", action="store_true",
                    help="delete a paused partial download instead of resuming it")
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    im = _command(sub, "import", cmd_import, "add a local .gguf file")
    im.add_argument("path", help="a .gguf model file")
    im.add_argument("--link", action="store_true",
                    help="use the file where it is instead of copying it into the data folder")

    rm = _command(sub, "remove", cmd_remove, "remove a downloaded or imported model")
    rm.add_argument("model", help="model id (see `models list`)")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    use = _command(sub, "use", cmd_use, "choose the model (and adapter) of a role")
    use.add_argument("model", help="model id (see `models list`)")
    use.add_argument("--role", choices=["answer", "manager", "both"], default="both")
    use.add_argument("--adapter", help="LoRA adapter .gguf trained on this model")

    opt = _command(sub, "optimize", cmd_optimize,
                   "derive the embedded model's faster Q8_0 copy (once; the setting fast_embedded_model uses it)")
    opt.add_argument("--quant", choices=["Q4_0", "Q8_0"], default="Q8_0",
                     help="format of the copy (default Q8_0; Q4_0 is faster but breaks the embedded model's replies)")
    opt.add_argument("--force", action="store_true", help="derive it again even when a sound copy exists")
    opt.add_argument("--threads", type=int, default=1, help="threads llama.cpp quantises with (default 1)")
    opt.add_argument("--use", action=argparse.BooleanOptionalAction, default=None,
                     help="also turn the setting fast_embedded_model on (--no-use: off)")


def _command(sub, name: str, func, help: str):
    """One `models` action: its parser, with the --json flag every action has."""
    p = add_command(sub, func, name, help=help)
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _done(args, data, text: str) -> int:
    """Print `data` as JSON with --json, else `text`; the action succeeded."""
    if args.json:
        _print_json(data)
    else:
        print(text)
    return 0


def _store():
    from core.catalog import ModelStore

    return ModelStore()


def _settings():
    from core.config import Settings, settings_path

    return Settings.load(settings_path())


def _roles_of(settings, record) -> list[str]:
    import os

    roles = []
    for role, spec in (("answer", settings.answer_model), ("manager", settings.manager_model)):
        if (spec.path is None and record.source == "embedded") or (
                spec.path and os.path.realpath(spec.path) == os.path.realpath(record.path)):
            roles.append(role)
    return roles


def cmd_list(args) -> int:
    from core.llm.gguf_info import human_size
    from core.catalog import fit_for_entry, fit_for_gguf

    store, settings = _store(), _settings()
    installed = []
    for record in store.list_models():
        fit = fit_for_gguf(record.path, args.ctx) if record.available else None
        installed.append(record.to_dict() | {"roles": _roles_of(settings, record),
                                             "fit": fit.to_dict() if fit else None})
    have = {r["catalog_id"] for r in installed if r["catalog_id"]}
    pending = {p.filename: p for p in store.pending_downloads()}
    catalog = []
    for entry in store.catalog:
        if entry.embedded or entry.id in have:
            continue
        fit = fit_for_entry(entry, args.ctx)
        part = pending.get(entry.filename)
        catalog.append(entry.to_dict() | {"fit": fit.to_dict() if fit else None,
                                          "paused_bytes": part.downloaded if part else 0})
    if args.json:
        _print_json({"installed": installed, "catalog": catalog})
        return 0
    mine = [(r["id"], human_size(r["size_bytes"]), r["fit"]["verdict"] if r["fit"] else "file missing",
             f"[{', '.join(r['roles'])}]" if r["roles"] else "") for r in installed]
    offered = []
    for c in catalog:
        size = human_size(c["size_bytes"]) if c["size_bytes"] else "~" + human_size(c["size_approx_bytes"] or 0)
        notes = [c["license"] or "", "" if c["verified"] else "(unverified hash)",
                 f"paused at {human_size(c['paused_bytes'])}" if c["paused_bytes"] else ""]
        offered.append((c["id"], size, c["fit"]["verdict"] if c["fit"] else "?", "  ".join(n for n in notes if n)))
    _print_tables([("Installed:", mine), ("Catalog (memory-r1 models download ID):", offered)])
    return 0


def _print_tables(sections: list[tuple[str, list[tuple[str, str, str, str]]]]) -> None:
    """Each section's title, then one line per (id, size, fit, notes), with the columns of all
    sections aligned: ids and fit verdicts left-aligned, sizes right-aligned (units line up)."""
    rows = [row for _, section in sections for row in section]
    w_id, w_size, w_fit = (max((len(r[i]) for r in rows), default=0) for i in range(3))
    for title, section in sections:
        print(title)
        if not section:
            print("  (none)")
        for model_id, size, fit, notes in section:
            print(f"  {model_id:<{w_id}}  {size:>{w_size}}  {fit:<{w_fit}}  {notes}".rstrip())


class _ProgressPrinter:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_pct = -10.0

    def __call__(self, p) -> None:
        from core.llm.gguf_info import human_size

        if self.quiet:
            return
        pct = 100.0 * p.fraction if p.fraction is not None else None
        if not self.tty and pct is not None and pct - self.last_pct < 10 and pct < 100:
            return
        self.last_pct = pct if pct is not None else self.last_pct
        eta = f", {int(p.eta_s) // 60}m{int(p.eta_s) % 60:02d}s left" if p.eta_s is not None else ""
        total = f" of {human_size(p.total)}" if p.total else ""
        pct_s = f"{pct:5.1f}% " if pct is not None else ""
        line = f"{pct_s}{human_size(p.downloaded)}{total} at {human_size(p.speed_bps)}/s{eta}"
        sys.stderr.write(("\r" + line.ljust(70)) if self.tty else line + "\n")
        sys.stderr.flush()


def cmd_download(args) -> int:
    from core.catalog.fit import fit_for_entry

    store = _store()
    if args.discard:
        existed = store.discard_download(args.model)
        return _done(args, {"discarded": existed},
                     "Partial download deleted." if existed else "No partial download to delete.")
    from core.catalog import find_entry

    entry = find_entry(args.model, store.catalog)
    fit = fit_for_entry(entry)
    if fit is not None and fit.verdict == "won't fit" and not args.quiet:
        print(f"warning: {entry.name} {fit.summary()}", file=sys.stderr)
    printer = _ProgressPrinter(args.quiet or args.json and not sys.stderr.isatty())
    try:
        record = store.download(args.model, progress=printer)
    except (KeyboardInterrupt, Cancelled):
        sys.stderr.write("\npaused: run the same command again to resume "
                         "(or add --discard to delete the partial file)\n")
        return 130
    if printer.tty and not printer.quiet:
        sys.stderr.write("\n")
    check = "sha256 verified" if record.verified else "sha256 not published: unverified"
    return _done(args, record.to_dict(), f"Downloaded {record.name} as {record.id!r} ({check}).")


def cmd_import(args) -> int:
    from core.catalog import AlreadyInstalledError

    try:
        record = _store().import_gguf(args.path, copy=not args.link)
    except AlreadyInstalledError as exc:  # the wanted state holds already: not a failure
        return _done(args, exc.record.to_dict() | {"already_installed": True}, str(exc))
    how = "referenced in place" if args.link else "copied into the models folder"
    return _done(args, record.to_dict(), f"Imported {record.name} as {record.id!r} ({how}; {record.architecture}, "
                 f"{record.quantization}, context {record.context_length}).")


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise InvalidInputError("Not asking for confirmation without a terminal; add --yes.")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_remove(args) -> int:
    from core.config import settings_path
    from core.llm.gguf_info import human_size
    from core.catalog import release_model

    store = _store()
    record = store.get(args.model)
    if record.source == "embedded":
        raise InvalidInputError("The embedded model ships with the app and cannot be removed.")
    what = (f"Delete {record.name} ({human_size(record.size_bytes)}, {record.path})?"
            if record.managed else f"Forget {record.name} (the file {record.path} is kept)?")
    if not args.yes and not _confirm(what):
        print("Nothing removed.")
        return 1
    settings = _settings()
    released = release_model(settings, record.path)
    if released:
        settings.save(settings_path())
    store.remove(record.id)
    moved = f"; {' and '.join(released)} now use the embedded model" if released else ""
    return _done(args, {"removed": record.to_dict(), "roles_reset_to_embedded": released},
                 f"Removed {record.id!r}{moved}.")


def cmd_use(args) -> int:
    from core.config import settings_path
    from core.catalog import assign_role

    store = _store()
    record = store.get(args.model)
    if args.adapter and not os.path.isfile(args.adapter):  # said before the model file is hashed
        raise InvalidInputError(f"The adapter file {args.adapter} does not exist (or is not a file).")
    settings = _settings()
    sha = store.sha256_of(record) if args.adapter else record.sha256
    roles = ["answer", "manager"] if args.role == "both" else [args.role]
    for role in roles:
        assign_role(settings, role, record.path, model_sha256=sha, adapter=args.adapter,
                    embedded=record.source == "embedded")
    settings.save(settings_path())
    return _done(args, {"model": record.id, "roles": roles, "adapter": args.adapter},
                 f"{' and '.join(roles).capitalize()} now use{'s' if len(roles) == 1 else ''} "
                 f"{record.name}" + (f" with adapter {args.adapter}" if args.adapter else "") + ".")


def cmd_optimize(args) -> int:
    from core.paths import embedded_gguf
    from core.llm import variant

    if args.threads < 1:
        raise InvalidInputError("--threads must be at least 1.")
    shipped = embedded_gguf()
    target = variant.variant_path(shipped, args.quant)
    reason = variant.check_variant(target, shipped)
    derived = args.force or reason is not None
    if derived:
        if not args.json:
            print(f"Deriving {target.name} from {shipped.name} ({reason or 'forced'})...", file=sys.stderr)
        record = variant.derive_variant(shipped, args.quant, threads=args.threads)
    else:
        record = variant.read_record(target)
        assert record is not None  # check_variant accepted it
    settings = _settings()
    if args.use is not None and settings.fast_embedded_model != args.use:
        from core.config import settings_path

        settings.fast_embedded_model = args.use
        settings.save(settings_path())
    used = settings.fast_embedded_model and args.quant == variant.FAST_QUANT
    state = ("the embedded model uses it (fast_embedded_model is on)" if used else
             "not used: add --use to turn the setting fast_embedded_model on")
    what = (f"Derived {target} in {record.seconds:.1f} s" if derived else f"{target} is already derived")
    return _done(args, record.to_dict() | {"derived": derived, "used": used},
                 f"{what} ({record.size_bytes / 2**20:.1f} MiB, sha256 {record.sha256[:12]}); {state}.")
