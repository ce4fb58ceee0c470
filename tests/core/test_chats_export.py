"""Exporting a chat as Markdown and JSON (real bank)."""

from __future__ import annotations

import json

import pytest

from core.chat_export import export_chat
from core.errors import InvalidInputError


def _chat(bank) -> int:
    cid = bank.chats.create_conversation("Trip to Porto").id
    bank.chats.set_system_prompt(cid, "Be brief.")
    bank.chats.add_message(cid, "user", "Plan a day in **Porto**")
    reply = bank.chats.add_message(cid, "assistant", "Walk by the river.",
                                   meta={"model": "tiny", "tokens_per_s": 12.34})
    bank.chats.add_version(reply.id, "Take the tram.", {"model": "tiny", "tokens_per_s": 20.0})
    return cid


def test_markdown_export(bank, tmp_path):
    cid = _chat(bank)
    path = export_chat(bank.chats, cid, tmp_path / "chat.md")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Trip to Porto\n")
    assert "> Be brief." in text
    assert text.index("## You\n\nPlan a day in **Porto**") < text.index("## Assistant\n\nTake the tram.")
    assert "*tiny · 20.0 tokens/s · version 2 of 2*" in text
    assert "Walk by the river." not in text  # the version shown is exported


def test_json_export_keeps_everything(bank, tmp_path):
    cid = _chat(bank)
    data = json.loads(export_chat(bank.chats, cid, tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert data["format"] == "memory-r1-chat" and data["conversation"]["title"] == "Trip to Porto"
    assert data["system_prompt"] == "Be brief."
    assert [(m["role"], m["content"]) for m in data["messages"]] == [("user", "Plan a day in **Porto**"),
                                                                     ("assistant", "Take the tram.")]
    assert [v["content"] for v in data["messages"][1]["meta"]["versions"]] == ["Walk by the river.", "Take the tram."]


def test_bad_name_is_refused_and_writes_nothing(bank, tmp_path):
    cid = _chat(bank)
    with pytest.raises(InvalidInputError):
        export_chat(bank.chats, cid, tmp_path / "out" / "chat.txt")
    assert not (tmp_path / "out").exists()
