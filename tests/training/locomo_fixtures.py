"""LoCoMo-shaped test data and the scripted Memory Manager the training tests share.

`locomo_sample` writes a conversation in the benchmark's JSON schema (sessions with their
date_time, turns with dia_ids, a qa list); `write_locomo` saves samples as a LoCoMo file;
`extracted_facts` / `decision_input` read the app's manager prompts, so each test's script only
says what its fake manager decides; `add_every_fact` is the plain script (one fact per turn,
`<speaker> said: <message>`, NONE for shown memories, ADD for new facts). `ANSWER_SESSIONS` are
the two sessions the Answer Agent data tests (examples, SFT pairs) ask their questions about.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

T1, T2 = "1:56 pm on 8 May, 2023", "10:00 am on 2 June, 2023"

ANSWER_SESSIONS = (
    (T1, ({"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a dog named Rex yesterday."},
          {"speaker": "Bob", "dia_id": "D1:2", "text": "I moved to Oslo in 2022."},
          {"speaker": "Ann", "dia_id": "D1:3", "text": "Rex loves the beach."})),
    (T2, ({"speaker": "Bob", "dia_id": "D2:1", "text": "I started a bakery."},)),
)


def locomo_sample(sample_id: str, sessions: Sequence[tuple[str, Sequence[dict]]], qa: Sequence[dict],
                  speakers: tuple[str, str] = ("Ann", "Bob")) -> dict:
    """One sample: `sessions` = [(date_time, [{"speaker", "dia_id", "text", ...}, ...]), ...]."""
    conv: dict = {"speaker_a": speakers[0], "speaker_b": speakers[1]}
    for n, (when, turns) in enumerate(sessions, start=1):
        conv[f"session_{n}_date_time"] = when
        conv[f"session_{n}"] = list(turns)
    return {"sample_id": sample_id, "conversation": conv, "qa": list(qa)}


def write_locomo(folder: Path, *samples: dict, name: str = "conv.json") -> Path:
    path = Path(folder) / name
    path.write_text(json.dumps(list(samples)), encoding="utf-8")
    return path


def last_user(messages) -> str:
    return [m["content"] for m in messages if m["role"] == "user"][-1]


def extracted_facts(messages, schema) -> list[str] | None:
    """For a fact-extraction call: one fact `<speaker> said: <message>`; None for other calls."""
    if not (schema and "facts" in schema["properties"]):
        return None
    user = last_user(messages)
    speaker = re.search(r"^Speaker: (.*)$", user, re.M).group(1)
    message = re.search(r"^Message: (.*)$", user, re.M).group(1)
    return [f"{speaker} said: {message}"]


def decision_input(messages) -> tuple[list[dict], list[str]]:
    """(shown memories, new facts) of a manager decision prompt."""
    user = last_user(messages)
    shown = json.loads(user.split("Existing memories:\n", 1)[1].split("\nNew facts:", 1)[0])
    facts = json.loads(user.split("New facts:\n", 1)[1].split("\nOutput:", 1)[0])
    return shown, facts


def add_every_fact(messages, schema) -> str:
    """The plain scripted manager: one fact per turn, every fact ADDed, shown memories kept."""
    facts = extracted_facts(messages, schema)
    if facts is not None:
        return json.dumps({"facts": facts})
    shown, facts = decision_input(messages)
    items = [{"id": m["id"], "text": m["text"], "event": "NONE"} for m in shown]
    items += [{"id": str(len(shown) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]
    return json.dumps({"memory": items})


def with_observation(sample: dict, observation: dict[int, dict[str, list]]) -> dict:
    """`sample` with LoCoMo's gold facts: {session: {speaker: [[fact, dia_id(s)], ...]}} ->
    "observation": {"session_N_observation": ...} (dia_ids as the data writes them: one id, a
    list, or "D2:1, D1:3")."""
    return {**sample, "observation": {f"session_{n}_observation": facts for n, facts in observation.items()}}
