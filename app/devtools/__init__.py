"""app/devtools."""
