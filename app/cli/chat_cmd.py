"""`memory-r1 chat`, `memory-r1 ingest FILE` and `memory-r1 ask QUESTION`.

Registration imports nothing heavy: the bank, the agents and llama.cpp are imported inside
the command functions. Models: `--answer-model/--manager-model PATH` (a GGUF; default the
embedded SmolLM2-135M or the one in settings), `--answer-adapter/--manager-adapter PATH`
(a GGUF LoRA; without one, the role's adapter shipped in assets/adapters is used when it
was trained on that model, unless `--no-shipped-adapters` or the setting is off), `--n-ctx`,
`--threads`. The models are a `core.llm.modelset.ModelSet` (loaded through `_load`, closed at
the end; no fallback: a model given here that fails to load is an error). When both roles
resolve to the same model, one instance is loaded and shared (chat). `ingest` loads a second
instance of a small (<= 1 GiB) manager model for the decision calls, so extraction and
decision each keep their instruction prefix cached (benchmarks/agents.py --two-instances:
~2.6x faster per turn).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from app.cli.options import add_command, add_model_options, check_model_files, model_spec
from core.paths import CHAT_HISTORY_NAME


def _model_args(p: argparse.ArgumentParser) -> None:
    add_model_options(p, title="models", default="settings / embedded", shipped=True)


def register(sub) -> None:
    p = add_command(sub, run_chat, "chat", help="chat in the terminal with memory",
                       description="Terminal chat. Ctrl-C stops a reply; /memories, /forget ID, /quit.")
    p.add_argument("--conversation", type=int, metavar="ID", help="continue this conversation")
    p.add_argument("--name", default="User", help="your name in memories (default: User)")
    p.add_argument("--temporary", action="store_true", help="a chat that neither reads nor writes memory")
    _model_args(p)

    p = add_command(sub, run_ingest, "ingest", help="feed a conversation file through the memory manager",
                       description="Ingest a LoCoMo JSON file (one or more samples) or JSONL of "
                                   "{speaker, text, time} turns. Resumable: done turns are skipped.")
    p.add_argument("file", help="LoCoMo .json or .jsonl file")
    p.add_argument("--restart", action="store_true", help="forget earlier progress on this file")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--user", default="User", metavar="NAME",
                   help="your name as a speaker (default: User, as in chat): only your own turns may ask "
                        "to forget memories; turns of other speakers never delete")
    _model_args(p)

    p = add_command(sub, run_ask, "ask", help="answer one question from memory",
                       description='Answer a question from memory. --json prints {"answer", "selected", "retrieved"}.')
    p.add_argument("question")
    p.add_argument("-k", type=int, default=60, help="memories to retrieve (default 60; 30 per speaker with two)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _model_args(p)


# --------------------------------------------------------------------------- shared helpers

def _specs(args):
    """(settings, answer spec, manager spec) from the settings file with the command-line
    overrides, each spec with the role's shipped adapter (core.catalog.shipped) unless it has an
    adapter of its own or shipped adapters are off (settings or `--no-shipped-adapters`), and
    on the embedded model's faster copy when `fast_embedded_model` is on (as the GUI's
    `effective_spec`)."""
    from core.catalog.roles import role_spec
    from core.catalog.shipped import with_embedded_variant, with_shipped_adapter
    from core.config import Settings, settings_path

    settings = Settings.load(settings_path())
    if getattr(args, "manager_extraction", None):
        settings.manager_extraction = args.manager_extraction
    shipped = settings.use_shipped_adapters and not getattr(args, "no_shipped_adapters", False)
    answer, manager = (with_embedded_variant(
                           with_shipped_adapter(model_spec(args, role, role_spec(settings, role)), role, shipped),
                           settings.fast_embedded_model)
                       for role in ("answer", "manager"))
    return settings, answer, manager


def _check_files(args) -> None:
    """InvalidInputError when a model or adapter file given on the command line is missing or
    not a GGUF of its kind (`options.check_model_files`): said before the bank, the embedder or
    any model loads."""
    check_model_files(args)


def _load(spec):
    from core.llm.runtime import load_backend

    return load_backend(spec)


SMALL_MODEL_BYTES = 1 << 30  # a manager model up to this size gets a second instance for ingest


def _is_small(spec) -> bool:
    import os

    from core.paths import embedded_gguf

    try:
        return os.path.getsize(spec.path or embedded_gguf()) <= SMALL_MODEL_BYTES
    except OSError:
        return False


def _open_bank():
    from core.memory import MemoryBank

    return MemoryBank.open()


def _format_changes(changes) -> list[str]:
    lines = [f"  + #{m.id} {m.text}" for m in changes.added]
    lines += [f"  ~ #{m.id} {m.text}" for m in changes.updated]
    lines += [f"  - #{m.id} {m.text}" for m in changes.deleted]
    return lines


# --------------------------------------------------------------------------- ask

def run_ask(args) -> int:
    from core.agents.answer import NO_MEMORY_ANSWER, AnswerAgent, AnswerResult
    from core.errors import InvalidInputError
    from core.llm.modelset import ModelSet

    if not args.question.strip():
        raise InvalidInputError("Give a question to answer.")
    if args.k < 1:
        raise InvalidInputError("-k must be at least 1.")
    _check_files(args)
    _settings, answer_spec, _ = _specs(args)
    bank = _open_bank()
    models = ModelSet.from_specs({"answer": answer_spec}, loader=_load)  # loaded on first use
    try:
        retrieved = AnswerAgent(bank, None).retrieve(args.question, k=args.k) if bank.count() else []
        if not retrieved:  # no memories at all: no need to load a model
            result = AnswerResult(NO_MEMORY_ANSWER, [], [], "")
        else:
            result = AnswerAgent(bank, models.answer, k=args.k).answer(args.question, memories=retrieved)
    finally:
        models.close()
        bank.close()
    if args.json:
        print(json.dumps({"answer": result.answer, "selected": [m.id for m in result.selected],
                          "retrieved": [m.id for m in result.retrieved]}, ensure_ascii=False))
    else:
        print(result.answer)
        if result.selected:
            print("\nmemories used:")
            for m in result.selected:
                print(f"  #{m.id} {m.prompt_line()}")
    return 0


# --------------------------------------------------------------------------- ingest

def run_ingest(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from core.assistant.ingest import STATE_FILE, IngestState, ingest_turns, load_turns
    from core.fileio import sha256_file
    from core.agents.manager import ManagerConfig, MemoryManager
    from core.llm.modelset import ModelSet
    from core.paths import data_dir

    path = Path(args.file)
    turns = load_turns(path)  # a bad file fails here, before any model is loaded
    _check_files(args)
    settings, _, manager_spec = _specs(args)
    key = sha256_file(path)  # an edited file starts over instead of skipping wrongly
    state = IngestState(data_dir() / STATE_FILE)
    if args.restart:
        state.reset(key)
    done = min(state.done(key), len(turns))
    if done >= len(turns):
        summary = {"file": str(path), "turns": len(turns), "skipped": done, "processed": 0,
                   "added": 0, "updated": 0, "deleted": 0, "unchanged": 0, "rejected": 0,
                   "failed": state.failed(key)}
        _print_ingest(summary, args.json, already=True)
        return 0
    # a small model gets a second instance for the decision calls: extraction and decision
    # then each keep their instruction prefix in the KV cache (2.6x faster per turn here)
    models = ModelSet.from_specs({"manager": manager_spec, "decide": manager_spec if _is_small(manager_spec) else None},
                                 loader=_load)
    bank = _open_bank()
    try:
        from core.memory.db import check_writable

        check_writable(bank.path)  # a lock or a read-only file is said before the models load
        manager = MemoryManager(bank, models.manager, decide_backend=models.decide,
                                config=ManagerConfig(extraction=settings.manager_extraction))
        with tqdm(total=len(turns), initial=done, unit="turn", desc="ingest", file=sys.stderr,
                  dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar:
            report = ingest_turns(manager, turns, state=state, key=key, file=str(path.resolve()), user=args.user,
                                  on_turn=lambda turn, changes: bar.update(1))
    finally:
        models.close()
        bank.close()
    ch = report.changes
    summary = {"file": str(path), "turns": report.total, "skipped": report.skipped,
               "processed": report.processed, "added": len(ch.added), "updated": len(ch.updated),
               "deleted": len(ch.deleted), "unchanged": ch.noops, "rejected": report.rejected,
               "failed": report.failed}
    _print_ingest(summary, args.json)
    return 0


def _print_ingest(summary: dict, as_json: bool, already: bool = False) -> None:
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    if already:
        print(f"{summary['file']}: all {summary['turns']} turns were already ingested (--restart to redo).")
        return
    print(f"{summary['file']}: {summary['processed']} turns processed"
          + (f" ({summary['skipped']} done earlier)" if summary["skipped"] else "")
          + f"; memories: {summary['added']} added, {summary['updated']} updated, "
            f"{summary['deleted']} deleted, {summary['unchanged']} unchanged"
          + f"; rejected {summary['rejected']} {'fact' if summary['rejected'] == 1 else 'facts'} "
            "not supported by what was said (memory history shows them).")
    if summary["failed"]:
        print(f"warning: {len(summary['failed'])} turn(s) failed (model output unusable twice; see the log): "
              + ", ".join(summary["failed"][:10]), file=sys.stderr)


# --------------------------------------------------------------------------- chat

HELP = "Commands: /memories  /forget ID  /help  /quit   (Ctrl-C stops a reply; Ctrl-D quits)"
HISTORY_FILE = CHAT_HISTORY_NAME  # in the data dir: the lines typed at `you>`, owner-only (0600)
HISTORY_LENGTH = 1000


class LineEditing:
    """Line editing and history for the chat's `input()`: the stdlib `readline` (GNU readline
    or libedit) where it exists and stdin is a terminal; elsewhere (Windows, a pipe) plain
    `input()`. A context manager: entering loads the history file (created 0600), leaving
    writes the last HISTORY_LENGTH lines back (0600) unless `save` is False (a temporary
    chat leaves no trace). `module` and `interactive` are injectable (tests). `active` says
    whether readline is in use. Terminal thread only; never raises for a history file it
    cannot read or write (the chat goes on without it)."""

    def __init__(self, path, *, save: bool = True, module=None, interactive: bool | None = None,
                 platform: str | None = None) -> None:
        import os

        self.path = path
        self.save = save
        platform = sys.platform if platform is None else platform
        interactive = sys.stdin.isatty() if interactive is None else interactive
        if module is None and interactive and not platform.startswith("win"):
            try:
                import readline as module
            except ImportError:  # Python built without readline
                module = None
        self.readline = module if interactive else None
        self._os = os

    @property
    def active(self) -> bool:
        return self.readline is not None

    def __enter__(self) -> "LineEditing":
        if self.readline is None:
            return self
        try:
            self.readline.set_history_length(HISTORY_LENGTH)
            if self._os.path.exists(self.path):
                self._os.chmod(self.path, 0o600)  # an older or hand-made file
                self.readline.read_history_file(str(self.path))
        except OSError as exc:
            print(f"(chat history not loaded: {exc.strerror or exc})", file=sys.stderr)
        return self

    def __exit__(self, *exc) -> None:
        if self.readline is None or not self.save:
            return
        try:
            fd = self._os.open(self.path, self._os.O_WRONLY | self._os.O_CREAT, 0o600)
            self._os.close(fd)
            self._os.chmod(self.path, 0o600)
            self.readline.write_history_file(str(self.path))
        except OSError as exc:
            print(f"(chat history not saved: {exc.strerror or exc})", file=sys.stderr)


def quiet_terminal() -> None:
    """No progress bars in the middle of a conversation: the embedder loads lazily on the first
    message (transformers' "Loading weights", tqdm) and llama.cpp logs while a model loads; both
    are silenced here (TQDM_DISABLE, the hub and transformers bars; llama.cpp runs with
    verbose=False and its load output redirected by core.llm.runtime)."""
    import os

    from core.embeddings import quiet_progress_bars

    os.environ["TQDM_DISABLE"] = "1"
    quiet_progress_bars(interactive=False)


class _Notices:
    """Manager notices collected on the manager thread, printed by the terminal thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def on_changes(self, changes, turn: str) -> None:
        if changes:
            with self._lock:
                self._lines.append(f"[memory updated after {turn}: {changes.summary()}]")
                self._lines += _format_changes(changes)

    def on_error(self, exc: Exception) -> None:
        with self._lock:
            self._lines.append(f"[memory manager failed on a turn: {exc}]")

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            print(line)


def run_chat(args) -> int:
    from core.assistant.pipeline import Assistant
    from core.llm.modelset import ModelSet

    _check_files(args)
    quiet_terminal()
    settings, answer_spec, manager_spec = _specs(args)
    bank = _open_bank()
    models = ModelSet.from_specs({"answer": answer_spec, "manager": manager_spec}, loader=_load,
                                 share_identical=True)
    try:
        from core.memory.db import check_writable

        if args.conversation is not None:  # a bad id is said before the models load
            cid = bank.chats.get_conversation(args.conversation).id
        check_writable(bank.path)  # and so is a lock or a read-only file
        models.load("answer", "manager")
        if args.conversation is None:
            cid = bank.chats.create_conversation("Terminal chat", temporary=args.temporary).id
        assistant = Assistant(bank, models=models, settings=settings, user_name=args.name)
        notices = _Notices()
        assistant.add_memory_listener(notices.on_changes)
        assistant.add_error_listener(notices.on_error)
        resumed = assistant.resume_pending()
        if resumed:
            print(f"Remembering {resumed} earlier message{'s' if resumed != 1 else ''}…")
        from core.paths import data_dir

        try:
            with LineEditing(data_dir() / HISTORY_FILE, save=not args.temporary):
                _chat_loop(assistant, bank, cid, notices, temporary=args.temporary)
        finally:
            if assistant.pending_turns():
                print("Saving memories from the last messages… (Ctrl-C to skip)", file=sys.stderr)
                try:
                    assistant.wait_idle()
                except KeyboardInterrupt:
                    pass
            assistant.close()
            notices.flush()
    finally:
        models.close()
        bank.close()
    return 0


def _chat_loop(assistant, bank, cid: int, notices: _Notices, *, temporary: bool) -> None:
    print(f"Memory-R1 chat (conversation {cid}{', temporary' if temporary else ''}). {HELP}")
    while True:
        notices.flush()
        try:
            line = input("you> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print("\n(use /quit or Ctrl-D to leave)")
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if _slash(text, bank, cid):
                return
            continue
        _one_reply(assistant, cid, text, temporary)


def _one_reply(assistant, cid: int, text: str, temporary: bool) -> None:
    import signal

    from core.types import CancelToken

    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    print("assistant> ", end="", flush=True)
    try:
        reply = assistant.reply(cid, text, on_token=lambda t: print(t, end="", flush=True), cancel=cancel,
                                temporary=temporary)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(" [stopped]" if reply.cancelled else "")
    if reply.changes:
        print(f"[memory: {reply.changes.summary()}]")
    if reply.selected:
        print("  memories used: " + "; ".join(f"#{m.id} {m.text}" for m in reply.selected))


def _slash(text: str, bank, cid: int) -> bool:
    """Handle a /command; True to quit."""
    from core.errors import UserError
    from core.types import TurnRef

    cmd, _, arg = text.partition(" ")
    cmd = cmd.lower()
    if cmd in ("/quit", "/exit", "/q"):
        return True
    if cmd == "/memories":
        memories = bank.list()
        if not memories:
            print("(no memories yet)")
        for m in reversed(memories):
            print(f"  #{m.id} {m.prompt_line()}" + (f"  [{m.speaker}]" if m.speaker else ""))
    elif cmd == "/forget":
        try:
            mem = bank.delete(int(arg.strip().lstrip("#")), actor="user", turn=TurnRef.chat(cid)).memory
            print(f"Forgot #{mem.id}: {mem.text}  (restore with: memory-r1 memory restore {mem.id})")
        except ValueError:
            print("usage: /forget ID  (see /memories for ids)")
        except UserError as exc:
            print(f"error: {exc}")
    elif cmd == "/help":
        print(HELP)
    else:
        print(f"unknown command {cmd}. {HELP}")
    return False
