"""Settings, errors, ids and logging shared by every Atrium package."""
