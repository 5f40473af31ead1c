pytest_plugins = ["deploykit.testing.plugin"]
