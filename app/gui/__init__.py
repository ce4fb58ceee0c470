"""The desktop app (PySide6). It adds no logic of its own: every model and database call runs
in the background through `tasks.TaskRunner` and comes back to the GUI thread as a result.

Modules: `app` (wiring + `run`), `main_window`, `chat_view`, `conversation_list`,
`memory_panel`, `memory_model` (item models), `settings_dialog`, `dialogs` (errors, crash
dialog, excepthook), `tasks` (the one background-task helper).
"""
