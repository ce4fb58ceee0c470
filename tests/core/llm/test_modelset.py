"""`core.llm.modelset.ModelSet`: loading (lazy, shared, with the app's fallbacks), swapping and
closing the role backends. The corrupt custom GGUF goes through the real runtime's checks; the
embedded model stands in as a FakeBackend except in the slow test, which loads the real
embedded SmolLM2 for both roles."""

from __future__ import annotations

import logging

import pytest

from core.config import ModelSpec, Settings
from core.errors import InvalidInputError, ModelLoadError
from core.fakes import FakeBackend
from core.llm.modelset import ModelSet, role_attempts


class Counted(FakeBackend):
    """A FakeBackend that counts its close() calls."""

    def __init__(self, name="fake", **kw):
        super().__init__(name=name, **kw)
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        super().close()


class Loader:
    """Custom GGUFs through the real runtime (which refuses a corrupt one before native code);
    the embedded model as a Counted fake. Records every spec it was asked for."""

    def __init__(self):
        self.specs: list[ModelSpec] = []
        self.made: list[Counted] = []

    def __call__(self, spec: ModelSpec):
        from core.llm.runtime import load_backend

        self.specs.append(spec)
        if spec.path:
            return load_backend(spec)
        backend = Counted(name=f"embedded-{len(self.made)}")
        self.made.append(backend)
        return backend


@pytest.fixture
def corrupt(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x00garbage" * 200)
    return path


def test_a_corrupt_custom_model_falls_back_to_the_embedded_one_and_says_so(corrupt, caplog):
    caplog.set_level(logging.WARNING, logger="core.llm.modelset")
    settings = Settings(answer_model=ModelSpec(path=str(corrupt), n_ctx=1024, n_threads=2),
                        use_shipped_adapters=False)
    assert role_attempts(settings, "answer") == [settings.answer_model, ModelSpec(n_ctx=1024, n_threads=2)]
    loader, progress = Loader(), []
    models = ModelSet.for_settings(settings, loader=loader).load(progress=progress.append)
    assert [s.path for s in loader.specs] == [str(corrupt), None, None]  # answer twice, then the manager
    assert models.answer is loader.made[0] and models.manager is loader.made[1]
    assert models.spec("answer") == ModelSpec(n_ctx=1024, n_threads=2)  # what actually runs
    assert progress[0] == "Loading the answer model…" and progress[-1] == "Loading the memory manager model…"
    notice = progress[1]
    assert "broken.gguf" in notice and notice.endswith("Using the embedded model for the answer instead.")
    assert any("broken.gguf" in r.getMessage() for r in caplog.records)
    models.close()
    assert [b.closes for b in loader.made] == [1, 1]


def test_when_no_attempt_loads_the_error_propagates_and_loaded_roles_are_closed(corrupt):
    settings = Settings(manager_model=ModelSpec(path=str(corrupt)), use_shipped_adapters=False)
    answer, tried = Counted(), []

    def loader(spec):
        tried.append(spec.path)
        if spec.path:
            raise ModelLoadError("broken.gguf is not a GGUF file.")
        if len(tried) > 1:  # the manager's embedded fallback fails too
            raise ModelLoadError("out of memory")
        return answer

    models = ModelSet.for_settings(settings, loader=loader)
    with pytest.raises(ModelLoadError, match="out of memory"):
        models.load("answer", "manager")
    assert tried == [None, str(corrupt), None]
    assert answer.closes == 1 and models.loaded("answer") is None


def test_roles_load_lazily_once_and_identical_specs_can_share_one_instance():
    loader = Loader()
    spec = ModelSpec(n_ctx=512)
    models = ModelSet.from_specs({"answer": spec, "manager": spec, "judge": None}, loader=loader)
    assert loader.specs == [] and models.has("answer") and not models.has("judge")
    assert models.answer is models.answer and len(loader.made) == 1
    assert models.manager is not models.answer and models.decide is None  # own instances by default
    with pytest.raises(InvalidInputError, match="No judge model configured"):
        models.get("judge")
    shared = ModelSet.from_specs({"answer": spec, "manager": spec}, loader=loader, share_identical=True).load()
    assert shared.manager is shared.answer and len(loader.made) == 3
    shared.close()
    assert loader.made[2].closes == 1


def test_swap_puts_new_backends_in_place_and_closes_the_replaced_ones():
    old_answer, manager, new_answer = Counted("old"), Counted("manager"), Counted("new")
    models = ModelSet.of(answer=old_answer, manager=manager)
    released = []
    models.swap({"answer": ModelSpec(path="/m/new.gguf")}, loader=lambda spec: new_answer, release=released.append)
    assert models.answer is new_answer and models.manager is manager
    assert released == [[old_answer]] and old_answer.closes == 1 and manager.closes == 0
    assert models.spec("answer") == ModelSpec(path="/m/new.gguf")


def test_a_failed_swap_keeps_the_current_backends():
    answer, manager, loaded = Counted("answer"), Counted("manager"), Counted("loaded")

    def loader(spec):
        if spec.path == "/m/bad.gguf":
            raise ModelLoadError("bad.gguf is not a GGUF file.")
        return loaded

    models = ModelSet.of(answer=answer, manager=manager)
    with pytest.raises(ModelLoadError):
        models.swap({"answer": ModelSpec(path="/m/good.gguf"), "manager": ModelSpec(path="/m/bad.gguf")},
                    loader=loader)
    assert models.answer is answer and models.manager is manager
    assert loaded.closes == 1 and answer.closes == manager.closes == 0


def test_close_closes_each_backend_once_even_when_shared_or_failing(caplog):
    shared, decide = Counted("shared"), Counted("decide")

    class Broken(Counted):
        def close(self):
            super().close()
            raise RuntimeError("native free failed")

    judge = Broken("judge")
    models = ModelSet.of(answer=shared, manager=shared, decide=decide, judge=judge)
    models.close()
    models.close()  # idempotent
    assert (shared.closes, decide.closes, judge.closes) == (1, 1, 1)
    assert "closing the model judge failed" in caplog.text
    assert models.loaded("answer") is None and not models.has("answer")


@pytest.mark.slow
def test_the_real_embedded_model_loads_for_both_roles():
    from core.llm.runtime import LlamaBackend
    from core.types import GenParams

    small = ModelSpec(n_ctx=512, n_threads=1)
    settings = Settings(answer_model=small, manager_model=small, use_shipped_adapters=False)
    progress = []
    with ModelSet.for_settings(settings).load(progress=progress.append) as models:
        answer, manager = models.answer, models.manager
        assert isinstance(answer, LlamaBackend) and isinstance(manager, LlamaBackend) and answer is not manager
        hello = [{"role": "user", "content": "Say hi."}]
        for backend in (answer, manager):
            assert "".join(backend.complete(hello, params=GenParams(temperature=0.0, max_tokens=4))).strip()
        assert models.adapter_path("answer") is None
    assert answer.closed and manager.closed
    assert progress == ["Loading the answer model…", "Loading the memory manager model…"]
